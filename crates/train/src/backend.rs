//! Backends selected by config. Burn 0.22 picks the backend through the `Device` value, so
//! this is the only place that makes devices: the loop, the model and the objectives are the
//! same code on every one. The names and their cargo features are the run directory's
//! contract (bapo-rundir's [`Backend`]).

use burn::tensor::Device;

pub use bapo_rundir::Backend;

/// What this build can do with a [`Backend`]: whether it has it, and its device.
pub trait BackendDevice {
    /// Whether this build has the backend.
    fn compiled_in(self) -> bool;

    /// The plain (no autodiff) device; `index` picks the GPU for `cuda` and `wgpu`. A GPU
    /// backend is refused, with what was seen, when that GPU is not there: libtorch and wgpu
    /// would otherwise fail later, inside the first tensor operation, with their own panic.
    fn device(self, index: usize) -> Result<Device, BackendError>;

    /// The refusal of a backend this build lacks (public so that a build that has them all, as
    /// CI's has, can still check its words).
    fn not_compiled_in(self) -> BackendError;
}

impl BackendDevice for Backend {
    fn compiled_in(self) -> bool {
        match self {
            Backend::Cpu => true,
            Backend::TchCpu | Backend::Cuda => cfg!(feature = "tch"),
            Backend::Wgpu | Backend::WgpuCpu => cfg!(feature = "wgpu"),
        }
    }

    fn device(self, index: usize) -> Result<Device, BackendError> {
        if !self.compiled_in() {
            return Err(self.not_compiled_in());
        }
        check_gpu_visible(self, index)?;
        Ok(make_device(self, index))
    }

    fn not_compiled_in(self) -> BackendError {
        BackendError::NotCompiled {
            backend: self.name(),
            feature: self.feature().unwrap_or_default(),
        }
    }
}

/// Refuses a GPU backend whose GPU `index` is not visible.
#[allow(unused_variables)]
fn check_gpu_visible(backend: Backend, index: usize) -> Result<(), BackendError> {
    match backend {
        #[cfg(feature = "tch")]
        Backend::Cuda => {
            let count = usize::try_from(tch::Cuda::device_count()).unwrap_or(0);
            if index >= count {
                return Err(BackendError::NoCudaDevice { index, count });
            }
        }
        #[cfg(feature = "wgpu")]
        Backend::Wgpu => {
            let adapters = wgpu_adapters();
            // Burn picks among the adapters of one graphics API, and one GPU can show up
            // under several: count per API.
            let mut per_api = std::collections::BTreeMap::new();
            for a in &adapters {
                if a.device_type == wgpu::DeviceType::DiscreteGpu {
                    *per_api.entry(format!("{:?}", a.backend)).or_insert(0) += 1;
                }
            }
            let gpus = per_api.values().copied().max().unwrap_or(0);
            if index >= gpus {
                let seen = adapters
                    .iter()
                    .map(|a| format!("{} ({:?}, {:?})", a.name, a.device_type, a.backend))
                    .collect::<Vec<_>>();
                return Err(BackendError::NoWgpuGpu {
                    index,
                    seen: if seen.is_empty() {
                        "none".into()
                    } else {
                        seen.join(", ")
                    },
                });
            }
        }
        _ => {}
    }
    Ok(())
}

/// The device of a backend this build has, whose GPU is visible.
#[allow(deprecated, unused_variables, unreachable_code)]
fn make_device(backend: Backend, index: usize) -> Device {
    match backend {
        #[cfg(feature = "tch")]
        Backend::TchCpu => Device::libtorch(),
        #[cfg(feature = "tch")]
        Backend::Cuda => Device::libtorch_cuda(index),
        #[cfg(feature = "wgpu")]
        Backend::Wgpu => Device::wgpu(burn::tensor::DeviceKind::DiscreteGpu(index)),
        #[cfg(feature = "wgpu")]
        Backend::WgpuCpu => Device::wgpu(burn::tensor::DeviceKind::Cpu),
        _ => Device::flex(),
    }
}

/// The adapters wgpu finds on every graphics API (Burn's wgpu runtime picks among those of
/// one API: Vulkan on Linux), for the visibility check and its message.
#[cfg(feature = "wgpu")]
fn wgpu_adapters() -> Vec<wgpu::AdapterInfo> {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    futures_lite::future::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
        .iter()
        .map(wgpu::Adapter::get_info)
        .collect()
}

/// A backend this binary cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    #[error(
        "backend `{backend}` is not compiled into this binary: it needs the cargo feature `{feature}`; \
         `cargo xtask train --backend {backend}` builds it with that feature and the environment it needs"
    )]
    NotCompiled {
        backend: &'static str,
        feature: &'static str,
    },
    #[error(
        "backend `cuda` needs CUDA device {index}, and libtorch sees {count} CUDA device(s): is an \
         NVIDIA GPU with its driver there, and visible (CUDA_VISIBLE_DEVICES)? A libtorch without \
         CUDA sees none either (docs/backends.md). `tch-cpu` runs libtorch on the CPU"
    )]
    NoCudaDevice { index: usize, count: usize },
    #[error(
        "backend `wgpu` needs discrete GPU {index}, and wgpu found none at that index (adapters \
         seen: {seen}); `wgpu-cpu` runs on a CPU adapter such as Mesa's lavapipe (docs/backends.md)"
    )]
    NoWgpuGpu { index: usize, seen: String },
}

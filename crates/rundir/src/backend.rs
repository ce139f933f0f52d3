//! The backends a run can be configured with (`training.backend`), by name, and the cargo
//! feature of `bapo-cli` / `bapo-train` that compiles each in. Making a device is the training
//! loop's (bapo-train's `BackendDevice`); this is what a config, a run's files and xtask's
//! builds agree on.

use std::fmt;

use serde::{Deserialize, Serialize};

/// `training.backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Backend {
    /// Flex, pure Rust (the default build).
    #[serde(rename = "cpu")]
    Cpu,
    /// libtorch on the CPU (cargo feature `tch`).
    #[serde(rename = "tch-cpu")]
    TchCpu,
    /// libtorch on an NVIDIA GPU (cargo feature `tch`).
    #[serde(rename = "cuda")]
    Cuda,
    /// wgpu on a GPU through Vulkan/Metal/DX12 (cargo feature `wgpu`).
    #[serde(rename = "wgpu")]
    Wgpu,
    /// wgpu on a CPU adapter (Mesa's lavapipe on a machine without a GPU).
    #[serde(rename = "wgpu-cpu")]
    WgpuCpu,
}

impl Backend {
    pub const ALL: [Backend; 5] = [
        Backend::Cpu,
        Backend::TchCpu,
        Backend::Cuda,
        Backend::Wgpu,
        Backend::WgpuCpu,
    ];

    /// The name used in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::TchCpu => "tch-cpu",
            Backend::Cuda => "cuda",
            Backend::Wgpu => "wgpu",
            Backend::WgpuCpu => "wgpu-cpu",
        }
    }

    /// The cargo feature of `bapo-cli` / `bapo-train` that compiles this backend in (None:
    /// the default build has it).
    pub fn feature(self) -> Option<&'static str> {
        match self {
            Backend::Cpu => None,
            Backend::TchCpu | Backend::Cuda => Some("tch"),
            Backend::Wgpu | Backend::WgpuCpu => Some("wgpu"),
        }
    }
}

impl std::str::FromStr for Backend {
    type Err = String;

    /// A backend by its config name (`cpu`, `tch-cpu`, `cuda`, `wgpu`, `wgpu-cpu`).
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Backend::ALL
            .into_iter()
            .find(|b| b.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Backend::ALL.iter().map(|b| b.name()).collect();
                format!("unknown backend `{name}`: one of {}", names.join(", "))
            })
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_backend_is_found_by_its_name_and_serialised_as_it() {
        for backend in Backend::ALL {
            assert_eq!(backend.name().parse::<Backend>(), Ok(backend));
            let json = serde_json::to_string(&backend).unwrap();
            assert_eq!(json, format!("\"{}\"", backend.name()));
        }
        let error = "gpu".parse::<Backend>().unwrap_err();
        assert_eq!(
            error,
            "unknown backend `gpu`: one of cpu, tch-cpu, cuda, wgpu, wgpu-cpu"
        );
    }
}

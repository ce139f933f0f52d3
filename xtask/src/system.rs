//! System packages the checks need, installed with apt-get where missing.

use std::path::Path;
use std::process::Command;

use anyhow::{Result, bail};

/// System packages a check needs: `(file that shows it is installed, Debian package)`.
/// Missing ones are installed with apt-get (through sudo when not root); where that is not
/// possible the error names the packages.
pub fn ensure_system_packages(packages: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(marker, _)| !Path::new(marker).exists())
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let hint = format!(
        "install the Debian/Ubuntu packages {} (or your system's equivalents)",
        missing.join(" ")
    );
    if Command::new("apt-get").arg("--version").output().is_err() {
        bail!("apt-get is not available: {hint}");
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let apt = |args: &[&str]| -> Result<bool> {
        let mut command = if root {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.args(["-n", "apt-get"]);
            c
        };
        eprintln!("$ apt-get {}", args.join(" "));
        Ok(command
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map(|s| s.success())
            .unwrap_or(false))
    };
    let install: Vec<&str> = ["install", "-y", "-qq", "--no-install-recommends"]
        .into_iter()
        .chain(missing.iter().copied())
        .collect();
    let installed = apt(&install)? || (apt(&["update", "-qq"])? && apt(&install)?);
    if !installed {
        bail!("could not install them with apt-get: {hint}");
    }
    Ok(())
}

/// Mesa's lavapipe (the Vulkan CPU driver) for `wgpu-cpu`, and a font for the run plots.
pub const CHECK_PACKAGES: [(&str, &str); 3] = [
    (
        "/usr/share/vulkan/icd.d/lvp_icd.x86_64.json",
        "mesa-vulkan-drivers",
    ),
    ("/usr/lib/x86_64-linux-gnu/libvulkan.so.1", "libvulkan1"),
    (
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "fonts-dejavu-core",
    ),
];

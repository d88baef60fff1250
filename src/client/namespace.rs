//! Where a namespace's broker listens. The socket's path names the namespace:
//! `IPCSHIM_SOCKET` gives it outright; otherwise `$IPCSHIM_DIR` (default /tmp) holds
//! `ipcshim/NAME.sock` for the machine-wide namespaces, and `ipcshim-UID/NAME.sock` for the
//! per-user ones a client falls back to when the shared broker is run by a stranger.
//! NAME is `IPCSHIM_NAMESPACE`, or "default".

use std::path::PathBuf;

pub fn name() -> String {
    let raw = std::env::var("IPCSHIM_NAMESPACE").unwrap_or_default();
    let clean: String = raw.chars().filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c)).collect();
    if clean.is_empty() || clean.starts_with('.') {
        "default".to_string()
    } else {
        clean
    }
}

fn base_dir() -> PathBuf {
    std::env::var_os("IPCSHIM_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp"))
}

/// The shared socket path, and the per-user one for `uid`.
pub fn socket_paths(uid: u32) -> (PathBuf, PathBuf) {
    if let Some(p) = std::env::var_os("IPCSHIM_SOCKET") {
        let p = PathBuf::from(p);
        return (p.clone(), p);
    }
    let name = format!("{}.sock", name());
    (base_dir().join("ipcshim").join(&name), base_dir().join(format!("ipcshim-{uid}")).join(&name))
}

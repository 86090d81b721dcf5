//! Small durable writes of the master's own files (tokens, the pointer file).

use std::path::Path;

/// Write `content` to `path` with mode 0600: to a temporary file first,
/// synced, then renamed over, so a crash leaves the old or the new file.
pub fn write_secret(path: &Path, content: &str) -> std::io::Result<()> {
    write_atomic(path, content, 0o600)
}

/// Write `content` and a newline to `path` with `mode`, atomically and
/// durably (durable-fs: temporary file, fsync, rename, fsync of the directory).
pub fn write_atomic(path: &Path, content: &str, mode: u32) -> std::io::Result<()> {
    durable_fs::write_atomic(path, format!("{content}\n").as_bytes(), mode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn secrets_are_private_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("admin.token");
        write_secret(&p, "one").unwrap();
        write_secret(&p, "two").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "two\n");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}

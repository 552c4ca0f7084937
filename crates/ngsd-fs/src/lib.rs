//! Atomic file writes: the content goes to a temporary file in the destination's folder
//! ([`tempfile::NamedTempFile`]), which is renamed over the destination only once complete
//! ([`NamedTempFile::persist`]). A reader sees the old file or the new one, never a torn
//! one, and a failure leaves no temporary file behind (it is removed when dropped).

use std::io::Write;
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A write that did not complete; the destination is unchanged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Creating the folder or the temporary file, writing, or renaming failed.
    #[error("cannot {action} {path}: {source}; check that the folder exists and is writable")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The destination (or the folder).
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Replaces `path` with what `fill` writes into a temporary file beside it (creating the
/// folder if needed). `fill` gets the open file and its path (for tools that write by name);
/// its error is returned as is, and then `path` is left untouched.
pub fn replace_with<E>(
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File, &Path) -> std::result::Result<(), E>,
) -> std::result::Result<(), E>
where
    E: From<Error>,
{
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d,
        None => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(io("create the folder", dir))?;
    let mut tmp = NamedTempFile::new_in(dir).map_err(io("create a temporary file for", path))?;
    // Temporary files are private (0600); the result gets the old file's permissions, or
    // the usual ones for a new file.
    let permissions = match std::fs::metadata(path) {
        Ok(m) => m.permissions(),
        Err(_) => default_permissions(tmp.as_file())?,
    };
    tmp.as_file()
        .set_permissions(permissions)
        .map_err(io("set the permissions of", path))?;
    let tmp_path = tmp.path().to_path_buf();
    fill(tmp.as_file_mut(), &tmp_path)?;
    tmp.as_file_mut()
        .sync_all()
        .map_err(io("flush the new", path))?;
    tmp.persist(path)
        .map_err(|e| io("rename into", path)(e.error))?;
    Ok(())
}

#[cfg(unix)]
fn default_permissions(_file: &std::fs::File) -> Result<std::fs::Permissions> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::Permissions::from_mode(0o644))
}

#[cfg(not(unix))]
fn default_permissions(file: &std::fs::File) -> Result<std::fs::Permissions> {
    file.metadata()
        .map(|m| m.permissions())
        .map_err(io("read the permissions of", Path::new("a temporary file")))
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    replace_with(path, |f, _| f.write_all(bytes).map_err(io("write", path)))
}

/// Copies `from` to `to` atomically.
pub fn copy_atomic(from: &Path, to: &Path) -> Result<()> {
    replace_with(to, |f, _| {
        let mut src = std::fs::File::open(from).map_err(io("open", from))?;
        std::io::copy(&mut src, f).map_err(io("copy into", to))?;
        // A copy keeps the source's permissions (an executable or a library stays one).
        let permissions = src
            .metadata()
            .map_err(io("read the permissions of", from))?
            .permissions();
        f.set_permissions(permissions)
            .map_err(io("set the permissions of", to))
    })
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "a test fails loudly on any unexpected error"
    )]

    use super::*;

    #[test]
    fn writes_replace_and_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/out.txt");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let copy = dir.path().join("copy.txt");
        copy_atomic(&path, &copy).unwrap();
        assert_eq!(std::fs::read(&copy).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["out.txt"]);
    }

    #[test]
    fn a_failed_fill_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        write_atomic(&path, b"old").unwrap();
        let r: Result<()> = replace_with(&path, |f, _| {
            f.write_all(b"half").unwrap();
            Err(io("write", Path::new("x"))(std::io::Error::other(
                "disk full",
            )))
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn errors_name_the_path() {
        let err = copy_atomic(Path::new("/nonexistent/a"), Path::new("/tmp/ngsd-fs-b"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("cannot open /nonexistent/a: "), "{err}");
    }
}

//! The data directory is private to the user eddy runs as: the directory 0700, its files 0600.
//!
//! eddy sets its umask to 077 at start, so everything it creates (the store, exports, the admin
//! token) is private; files left readable by an older eddy or a careless copy are tightened at
//! start, with a warning naming how many.

use std::io;
use std::path::Path;

/// Makes everything eddy creates from now on private to its user (umask 077).
pub fn private_umask() {
    // SAFETY: umask only sets the process's file mode creation mask.
    unsafe {
        libc::umask(0o077);
    }
}

/// Creates `dir` (mode 0700) if needed and removes group and other permissions from everything
/// under it; answers how many entries were tightened.
pub fn secure(dir: &Path) -> io::Result<usize> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mut tightened = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            let private = if meta.is_dir() { 0o700 } else { 0o600 };
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(private))?;
            tightened += 1;
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
        }
    }
    Ok(tightened)
}

/// The default key file: beside the data directory, named after it (`./eddy-data.key`), so
/// that a copy of the data directory alone does not carry the key that opens its credentials.
pub fn default_key_file(data_dir: &Path) -> std::path::PathBuf {
    // Components drop a trailing slash, which would otherwise put the file inside the directory.
    let mut name = data_dir
        .components()
        .collect::<std::path::PathBuf>()
        .into_os_string();
    name.push(".key");
    name.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn existing_files_are_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        std::fs::create_dir_all(dir.join("store")).unwrap();
        std::fs::write(dir.join("store/file"), "x").unwrap();
        std::fs::set_permissions(
            dir.join("store/file"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        std::fs::set_permissions(dir.join("store"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(secure(&dir).unwrap(), 3);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("store/file")), 0o600);
        assert_eq!(secure(&dir).unwrap(), 0);
    }

    #[test]
    fn key_file_sits_beside_the_directory() {
        assert_eq!(
            default_key_file(Path::new("./eddy-data")),
            Path::new("./eddy-data.key")
        );
        assert_eq!(
            default_key_file(Path::new("/var/lib/eddy/")),
            Path::new("/var/lib/eddy.key")
        );
    }
}

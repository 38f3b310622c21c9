//! Owner-only file modes for the data dir and the database: password hashes
//! and encrypted values must not be readable by other local users, whatever
//! the process umask. On non-Unix systems these are no-ops.

use std::io;
use std::path::Path;

/// Creates `dir` (and missing parents) if needed and makes it 0700.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        if !dir.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)
    }
}

/// Makes every folder under `root` (itself included) 0700 and every file
/// 0600. Symbolic links are left alone (never followed).
pub fn private_tree(root: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::symlink_metadata(root)?;
        if meta.is_dir() {
            std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))?;
            for entry in std::fs::read_dir(root)? {
                private_tree(&entry?.path())?;
            }
        } else if meta.is_file() {
            std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        let _ = root;
        Ok(())
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn new_and_existing_dirs_become_owner_only() {
        let tmp = tempfile::tempdir().unwrap();
        let fresh = tmp.path().join("a/b");
        private_dir(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);
        let loose = tmp.path().join("loose");
        std::fs::create_dir(&loose).unwrap();
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&loose).unwrap();
        assert_eq!(mode(&loose), 0o700);
    }

    #[test]
    fn a_tree_gets_0700_folders_and_0600_files() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("db");
        std::fs::create_dir_all(root.join("blobs")).unwrap();
        std::fs::write(root.join("conf"), b"x").unwrap();
        std::fs::write(root.join("blobs/1"), b"x").unwrap();
        for p in [root.join("conf"), root.join("blobs/1")] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        private_tree(&root).unwrap();
        assert_eq!((mode(&root), mode(&root.join("blobs"))), (0o700, 0o700));
        assert_eq!(
            (mode(&root.join("conf")), mode(&root.join("blobs/1"))),
            (0o600, 0o600)
        );
    }
}

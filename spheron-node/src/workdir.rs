//! Working directories that travel with a workload: packed by the tenant into a tar archive
//! ([`pack`]), hashed into the signed manifest, uploaded to the provider's gateway, unpacked
//! as the workload's working directory ([`unpack`]).
//!
//! The archive is deterministic (entries sorted, times, owners and modes normalised), so
//! one directory always gives one hash. Left out: the directories and files named in
//! [`EXCLUDED`] at any depth, symbolic links and special files. Unpacking accepts regular
//! files and directories only, at relative paths without `..`, so an archive never writes
//! outside its destination.

use alloy::primitives::B256;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// Largest archive packed or accepted by default, in bytes (1 GiB).
pub const MAX_WORKDIR_BYTES: u64 = 1 << 30;

/// Names never packed, at any depth.
pub const EXCLUDED: &[&str] = &[".git", ".venv", "__pycache__"];

/// The directory inside a workload's working directory whose files the provider keeps for
/// download until the lease is settled plus a grace period.
pub const OUTPUTS: &str = "outputs";

/// What went wrong with a working directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkdirError {
    /// The directory holds more than the limit (after exclusions).
    #[error("working directory {dir} holds more than {limit} bytes (excluding {excluded})", excluded = EXCLUDED.join(", "))]
    TooLarge {
        /// The directory.
        dir: PathBuf,
        /// The limit, in bytes.
        limit: u64,
    },
    /// The path is not a directory.
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The archive is malformed, or holds an entry it may not (a link, an absolute path,
    /// `..`).
    #[error("bad workdir archive: {0}")]
    BadArchive(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WorkdirError + '_ {
    move |source| WorkdirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A packed working directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packed {
    /// The tar archive.
    pub archive: Vec<u8>,
    /// BLAKE3-256 of `archive` ([`crate::auth::body_hash`]).
    pub hash: B256,
}

/// Files and directories under `dir` to pack, relative to it, sorted; their total size is
/// checked against `limit` before anything is read.
fn entries(dir: &Path, limit: u64) -> Result<Vec<(PathBuf, bool)>, WorkdirError> {
    let mut out = Vec::new();
    let mut total = 0u64;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let here = dir.join(&rel);
        let mut names: Vec<_> = std::fs::read_dir(&here)
            .map_err(io(&here))?
            .collect::<Result<_, _>>()
            .map_err(io(&here))?;
        names.sort_by_key(std::fs::DirEntry::file_name);
        let mut subdirs = Vec::new();
        for e in names {
            let name = e.file_name();
            if EXCLUDED.iter().any(|x| name == *x) {
                continue;
            }
            let path = rel.join(&name);
            let meta = e.file_type().map_err(io(&e.path()))?;
            if meta.is_dir() {
                out.push((path.clone(), true));
                subdirs.push(path);
            } else if meta.is_file() {
                total = total.saturating_add(e.metadata().map_err(io(&e.path()))?.len());
                if total > limit {
                    return Err(WorkdirError::TooLarge {
                        dir: dir.to_path_buf(),
                        limit,
                    });
                }
                out.push((path, false));
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    out.sort();
    Ok(out)
}

/// The bytes of file content [`pack`] would take from `dir`, refusing what it would
/// refuse (not a directory, over `limit`) without reading any file.
pub fn measure(dir: &Path, limit: u64) -> Result<u64, WorkdirError> {
    if !dir.is_dir() {
        return Err(WorkdirError::NotADirectory(dir.to_path_buf()));
    }
    let mut total = 0u64;
    for (rel, is_dir) in entries(dir, limit)? {
        if !is_dir {
            let p = dir.join(rel);
            total += std::fs::metadata(&p).map_err(io(&p))?.len();
        }
    }
    Ok(total)
}

/// Packs `dir` into a deterministic tar archive of at most `limit` bytes of file content.
pub fn pack(dir: &Path, limit: u64) -> Result<Packed, WorkdirError> {
    if !dir.is_dir() {
        return Err(WorkdirError::NotADirectory(dir.to_path_buf()));
    }
    let mut b = tar::Builder::new(Vec::new());
    for (rel, is_dir) in entries(dir, limit)? {
        let mut h = tar::Header::new_ustar();
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        let full = dir.join(&rel);
        if is_dir {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            b.append_data(&mut h, &rel, std::io::empty())
                .map_err(io(&full))?;
        } else {
            let f = std::fs::File::open(&full).map_err(io(&full))?;
            let meta = f.metadata().map_err(io(&full))?;
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(if executable(&meta) { 0o755 } else { 0o644 });
            h.set_size(meta.len());
            b.append_data(&mut h, &rel, f.take(meta.len()))
                .map_err(io(&full))?;
        }
    }
    let archive = b
        .into_inner()
        .map_err(|e| WorkdirError::BadArchive(e.to_string()))?;
    if archive.len() as u64 > limit.saturating_add(limit / 8 + (1 << 20)) {
        return Err(WorkdirError::TooLarge {
            dir: dir.to_path_buf(),
            limit,
        });
    }
    let hash = crate::auth::body_hash(&archive);
    Ok(Packed { archive, hash })
}

#[cfg(unix)]
fn executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn executable(_meta: &std::fs::Metadata) -> bool {
    false
}

/// Unpacks `archive` into `dest` (created if missing); returns the number of files written.
pub fn unpack(archive: impl Read, dest: &Path) -> Result<u64, WorkdirError> {
    std::fs::create_dir_all(dest).map_err(io(dest))?;
    let mut a = tar::Archive::new(archive);
    a.set_preserve_permissions(false);
    let mut files = 0;
    for entry in a
        .entries()
        .map_err(|e| WorkdirError::BadArchive(e.to_string()))?
    {
        let mut entry = entry.map_err(|e| WorkdirError::BadArchive(e.to_string()))?;
        let path = entry
            .path()
            .map_err(|e| WorkdirError::BadArchive(e.to_string()))?
            .into_owned();
        if path.as_os_str().is_empty()
            || !path.components().all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(WorkdirError::BadArchive(format!(
                "entry `{}` is not a plain relative path",
                path.display()
            )));
        }
        let target = dest.join(&path);
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                std::fs::create_dir_all(&target).map_err(io(&target))?;
            }
            tar::EntryType::Regular => {
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent).map_err(io(parent))?;
                }
                let mode = entry.header().mode().unwrap_or(0o644);
                let mut out = std::fs::File::create(&target).map_err(io(&target))?;
                std::io::copy(&mut entry, &mut out).map_err(io(&target))?;
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let perm = std::fs::Permissions::from_mode(if mode & 0o111 != 0 {
                        0o755
                    } else {
                        0o644
                    });
                    std::fs::set_permissions(&target, perm).map_err(io(&target))?;
                }
                #[cfg(not(unix))]
                let _ = mode;
                files += 1;
            }
            other => {
                return Err(WorkdirError::BadArchive(format!(
                    "entry `{}` is a {other:?}, only files and directories are accepted",
                    path.display()
                )));
            }
        }
    }
    Ok(files)
}

/// `rel` resolved inside `root`, refusing absolute paths, `..`, and anything (a symbolic
/// link the workload made, say) that resolves outside `root`; `None` when refused or
/// missing.
pub fn resolve_inside(root: &Path, rel: &str) -> Option<PathBuf> {
    let rel = Path::new(rel);
    if rel.as_os_str().is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    let root = root.canonicalize().ok()?;
    let full = root.join(rel).canonicalize().ok()?;
    full.starts_with(&root).then_some(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(root: &Path) {
        std::fs::create_dir_all(root.join("data/sub")).unwrap();
        std::fs::create_dir_all(root.join(".git/objects")).unwrap();
        std::fs::create_dir_all(root.join("pkg/__pycache__")).unwrap();
        std::fs::write(root.join("train.py"), "print('hi')\n").unwrap();
        std::fs::write(root.join("data/sub/x.bin"), [7u8; 1000]).unwrap();
        std::fs::write(root.join(".git/objects/big"), [0u8; 5000]).unwrap();
        std::fs::write(root.join("pkg/__pycache__/m.pyc"), "junk").unwrap();
        std::fs::write(root.join("pkg/m.py"), "x = 1\n").unwrap();
    }

    #[test]
    fn round_trip_excludes_and_is_deterministic() {
        let src = tempfile::tempdir().unwrap();
        tree(src.path());
        let a = pack(src.path(), MAX_WORKDIR_BYTES).unwrap();
        let b = pack(src.path(), MAX_WORKDIR_BYTES).unwrap();
        assert_eq!(a.hash, b.hash);
        assert_eq!(a.hash, crate::auth::body_hash(&a.archive));
        let dest = tempfile::tempdir().unwrap();
        assert_eq!(unpack(&a.archive[..], dest.path()).unwrap(), 3);
        assert_eq!(
            std::fs::read(dest.path().join("data/sub/x.bin")).unwrap(),
            [7u8; 1000]
        );
        assert!(dest.path().join("pkg/m.py").is_file());
        assert!(!dest.path().join(".git").exists());
        assert!(!dest.path().join("pkg/__pycache__").exists());
        // Changing a byte changes the hash.
        std::fs::write(src.path().join("pkg/m.py"), "x = 2\n").unwrap();
        assert_ne!(pack(src.path(), MAX_WORKDIR_BYTES).unwrap().hash, a.hash);
    }

    #[test]
    fn limits_and_bad_input_are_typed_errors() {
        let src = tempfile::tempdir().unwrap();
        tree(src.path());
        // 1000 + 12 + 6 bytes are packed; the excluded 5000 do not count.
        assert!(pack(src.path(), 1018).is_ok());
        assert_eq!(measure(src.path(), 1018).unwrap(), 1018);
        assert!(matches!(
            measure(src.path(), 1017),
            Err(WorkdirError::TooLarge { .. })
        ));
        assert!(matches!(
            pack(src.path(), 1017),
            Err(WorkdirError::TooLarge { limit: 1017, .. })
        ));
        assert!(matches!(
            pack(&src.path().join("train.py"), 10),
            Err(WorkdirError::NotADirectory(_))
        ));
        assert!(matches!(
            unpack(
                &b"not a tar archive at all, just some bytes"[..],
                src.path()
            ),
            Err(WorkdirError::BadArchive(_))
        ));
    }

    #[test]
    fn archives_cannot_escape_or_carry_links() {
        let dest = tempfile::tempdir().unwrap();
        // A `..` path, written around the tar crate's own checks.
        let mut raw = Vec::new();
        {
            let mut h = tar::Header::new_gnu();
            h.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../evil.t");
            h.set_size(1);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_cksum();
            let mut b = tar::Builder::new(&mut raw);
            b.append(&h, &b"x"[..]).unwrap();
            b.finish().unwrap();
        }
        assert!(matches!(
            unpack(&raw[..], &dest.path().join("in")),
            Err(WorkdirError::BadArchive(_))
        ));
        assert!(!dest.path().join("evil.t").exists());
        let mut link = Vec::new();
        {
            let mut b = tar::Builder::new(&mut link);
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, "l", "/etc/passwd").unwrap();
            b.finish().unwrap();
        }
        assert!(matches!(
            unpack(&link[..], dest.path()),
            Err(WorkdirError::BadArchive(_))
        ));
    }

    #[test]
    fn resolve_inside_refuses_escapes() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("outputs")).unwrap();
        std::fs::write(root.path().join("outputs/ckpt"), "w").unwrap();
        assert!(resolve_inside(root.path(), "outputs/ckpt").is_some());
        assert!(resolve_inside(root.path(), "../x").is_none());
        assert!(resolve_inside(root.path(), "/etc/passwd").is_none());
        assert!(resolve_inside(root.path(), "outputs/missing").is_none());
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("/etc", root.path().join("outputs/etc")).unwrap();
            assert!(resolve_inside(root.path(), "outputs/etc/passwd").is_none());
        }
    }
}

//! Output paths are checked before any work starts: a run that takes seconds must not end in
//! "cannot write" and lose its result.

use std::fs::OpenOptions;
use std::path::Path;

/// `flag FILE` can be written: not a directory, its directory exists, and the file can be
/// opened for writing (it is created, empty, if it did not exist).
pub fn writable_file(flag: &str, path: &Path) -> Result<(), String> {
    let shown = path.display();
    if path.as_os_str().is_empty() {
        return Err(format!("{flag}: empty file name"));
    }
    if path.is_dir() {
        return Err(format!("{flag} {shown}: is a directory"));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        return Err(format!(
            "{flag} {shown}: directory {} does not exist",
            dir.display()
        ));
    }
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map(|_| ())
        .map_err(|e| format!("{flag} {shown}: cannot be written: {e}"))
}

/// `flag DIR` is a directory files can be written into (created if it does not exist).
pub fn writable_dir(flag: &str, dir: &Path) -> Result<(), String> {
    let shown = dir.display();
    if dir.as_os_str().is_empty() {
        return Err(format!("{flag}: empty directory name"));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("{flag} {shown}: cannot create the directory: {e}"))?;
    let probe = dir.join(format!(".hypdbg-write-test-{}", std::process::id()));
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|e| format!("{flag} {shown}: cannot write into the directory: {e}"))?;
    std::fs::remove_file(&probe)
        .map_err(|e| format!("{flag} {shown}: cannot remove {}: {e}", probe.display()))
}

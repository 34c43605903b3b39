//! What open does with what a crash left in `.temp/`.

use crate::batch;
use crate::error::{Error, IoContext, Result};
use crate::platform;
use crate::store::Store;

/// Finishes or removes everything in `.temp/`: a batch staging directory with
/// a complete commit record is rolled forward, one without is removed, and
/// single-put and delete temp files are removed. Runs at a read-write open,
/// under the store's exclusive lock, so no other process's files are touched.
pub(crate) fn recover(store: &Store) -> Result<()> {
    let temp = &store.layout().temp;
    for entry in platform::read_dir(temp).ctx("read directory", temp)? {
        let entry = entry.ctx("read directory", temp)?;
        let path = entry.path();
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        let name = entry.file_name();
        if is_dir && name.to_string_lossy().starts_with("batch-") {
            batch::recover(store, &path)?;
        } else if is_dir {
            platform::remove_dir_all(&path).ctx("remove", &path)?;
        } else {
            match platform::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", path, e)),
            }
        }
    }
    Ok(())
}

//! The segment index saved at a clean shutdown and loaded at the next start, so that a restart
//! does not re-read and re-index every profile.
//!
//! A snapshot is only ever used for the exact state it was taken from. At shutdown, after the
//! writer's last commit, a random token is committed to the store and written into the file's
//! header. At start the file is used only if its token equals the store's; then, before any
//! write, both are removed. So a crash after the start, another eddy writing to the same
//! PostgreSQL database meanwhile, or a copied data directory all fall back to the rebuild.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use eddy_segments::Index;

use crate::StoreError;
use crate::backend::{Backend, Table, WriteSet};
use crate::meta;

/// The first bytes of a snapshot file, with the format's version.
const MAGIC: &[u8; 16] = b"eddy-index-v1\0\0\0";

/// Saves `index` to `path` under a fresh token committed to the store first. Nothing may be
/// written to the store after this (the writer has stopped).
pub(crate) fn save(backend: &dyn Backend, index: &Index, path: &Path) -> Result<(), StoreError> {
    let tmp = path.with_extension("tmp");
    let result = write_and_commit(backend, index, path, &tmp);
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn write_and_commit(
    backend: &dyn Backend,
    index: &Index,
    path: &Path,
    tmp: &Path,
) -> Result<(), StoreError> {
    let token = crate::ids::secret_hex(16).map_err(|e| StoreError::Backend(e.to_string()))?;
    let io = |e: std::io::Error| StoreError::Backend(format!("{}: {e}", tmp.display()));
    {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(tmp).map_err(io)?);
        out.write_all(MAGIC).map_err(io)?;
        out.write_all(token.as_bytes()).map_err(io)?;
        rmp_serde::encode::write(&mut out, index)
            .map_err(|e| StoreError::Backend(format!("encoding the segment index: {e}")))?;
        let file = out.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
    }
    // The token goes to the store before the file takes its name: a file with a token the
    // store does not hold is never used.
    backend.commit(WriteSet {
        ops: vec![(
            Table::Meta,
            meta::INDEX_SNAPSHOT.to_vec(),
            Some(token.into_bytes()),
        )],
    })?;
    std::fs::rename(tmp, path).map_err(io)?;
    Ok(())
}

/// The index saved at `path` if it belongs to the store's current state. Whatever it finds,
/// it removes the file and the store's token, so that the snapshot is never used twice. Called
/// at every start, also without a path: a start that does not use a snapshot still makes every
/// earlier one stale, since it may write.
pub(crate) fn take(
    backend: &dyn Backend,
    path: Option<&Path>,
) -> Result<Option<Index>, StoreError> {
    let expected = backend.get(Table::Meta, meta::INDEX_SNAPSHOT)?;
    let Some(path) = path else {
        forget(backend, expected.is_some())?;
        return Ok(None);
    };
    let loaded = match (&expected, File::open(path)) {
        (Some(token), Ok(file)) => read(file, token).unwrap_or_else(|reason| {
            tracing::warn!(path = %path.display(), reason, "segment index snapshot not used; rebuilding");
            None
        }),
        (None, Ok(_)) => {
            tracing::info!(path = %path.display(), "segment index snapshot is from another state of the store; rebuilding");
            None
        }
        (_, Err(_)) => None,
    };
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        return Err(StoreError::Backend(format!("{}: {e}", path.display())));
    }
    forget(backend, expected.is_some())?;
    Ok(loaded)
}

/// Removes the store's snapshot token, when it holds one.
fn forget(backend: &dyn Backend, held: bool) -> Result<(), StoreError> {
    if held {
        backend.commit(WriteSet {
            ops: vec![(Table::Meta, meta::INDEX_SNAPSHOT.to_vec(), None)],
        })?;
    }
    Ok(())
}

fn read(file: File, token: &[u8]) -> Result<Option<Index>, String> {
    let mut input = BufReader::with_capacity(1 << 20, file);
    let mut header = [0u8; 16];
    input.read_exact(&mut header).map_err(|e| e.to_string())?;
    if &header != MAGIC {
        return Err("not a snapshot of this version".into());
    }
    let mut found = vec![0u8; token.len()];
    input.read_exact(&mut found).map_err(|e| e.to_string())?;
    if found != token {
        tracing::info!("segment index snapshot is from another state of the store; rebuilding");
        return Ok(None);
    }
    let mut index: Index = rmp_serde::decode::from_read(&mut input).map_err(|e| e.to_string())?;
    index.after_load();
    Ok(Some(index))
}

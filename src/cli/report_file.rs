//! Files the CLI writes from a command's report (`get-certificate-file`, `get-bootstrap-file`).

use super::{CommandError, Output};

/// Writes a file a command's report carries (atomically, with `mode`) and says so.
pub(super) fn write(
    file: &std::path::Path,
    contents: &[u8],
    mode: u32,
    said: String,
) -> Result<(), CommandError> {
    crate::atomic::write_file(file, contents, mode).map_err(|source| {
        crate::tls::certs::CertError::Write {
            path: file.to_path_buf(),
            source,
        }
    })?;
    Output::print().info(said);
    Ok(())
}

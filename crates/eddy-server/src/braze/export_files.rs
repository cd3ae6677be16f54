//! Segment export files: newline-delimited JSON, zipped (Braze's default) or gzipped.

use std::io::Write;

/// Compresses `data` as a gzip member.
pub fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data)?;
    encoder.finish()
}

/// A ZIP archive holding one file, deflated.
pub fn zip_one(name: &str, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut crc = flate2::Crc::new();
    crc.update(data);
    let crc = crc.sum();
    let mut deflater =
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    deflater.write_all(data)?;
    let compressed = deflater.finish()?;
    let too_big = |n: usize| {
        u32::try_from(n).map_err(|_| std::io::Error::other("export part larger than 4 GiB"))
    };
    let (size, packed) = (too_big(data.len())?, too_big(compressed.len())?);
    let name_len = name.len() as u16;
    // Fixed DOS date 1980-01-01 00:00: exports carry their time in their path.
    let (time, date) = (0u16, 0x21u16);
    let mut out = Vec::with_capacity(compressed.len() + 2 * name.len() + 98);
    // Local file header.
    out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
    for v in [20u16, 0, 8, time, date] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for v in [crc, packed, size] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&name_len.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&compressed);
    let central_start = out.len() as u32;
    // Central directory header.
    out.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
    for v in [20u16, 20, 0, 8, time, date] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for v in [crc, packed, size] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for v in [name_len, 0, 0, 0, 0] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    let central_size = out.len() as u32 - central_start;
    // End of central directory.
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    for v in [0u16, 0, 1, 1] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&central_size.to_le_bytes());
    out.extend_from_slice(&central_start.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    Ok(out)
}

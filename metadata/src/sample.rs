//! The sample catalog built into sitesync: five real update documents from the public
//! Microsoft Update catalog (two categories and three Defender updates), byte for byte as
//! an upstream server returned them. A node with no configured upstream syncs from it, so
//! sitesync does something real on a fresh machine.

/// `(file name, document)` pairs, named as a catalog directory names them.
pub const DOCUMENTS: [(&str, &[u8]); 5] = [
    document!("56309036-4c77-4dd9-951a-99ee9c246a94-r101.xml"),
    document!("6964aab4-c5b5-43bd-a17d-ffb4346a8e1d-r100.xml"),
    document!("266f6222-c89d-43f2-9f8a-69340271e677-r200.xml"),
    document!("a2fef9b0-7951-4c2c-a42b-9e351dd1c1fe-r200.xml"),
    document!("ccb78947-6453-4ecc-9de8-bc0305c98f2d-r200.xml"),
];

macro_rules! document {
    ($name:literal) => {
        (
            $name,
            include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/",
                $name
            )),
        )
    };
}
use document;

/// Writes the sample catalog into `dir` (creating it), leaving files already there alone.
pub fn write_to(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, bytes) in DOCUMENTS {
        let path = dir.join(name);
        if !path.exists() {
            std::fs::write(path, bytes)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::{ParseLimits, parse_update};

    #[test]
    fn every_sample_document_parses_under_its_file_name() {
        for (name, bytes) in super::DOCUMENTS {
            let revision = parse_update(bytes, &ParseLimits::default()).unwrap();
            assert_eq!(
                format!("{}-r{}.xml", revision.id.update_id, revision.id.revision),
                name
            );
        }
    }
}

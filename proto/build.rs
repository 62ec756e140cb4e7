//! Compiles `proto/sitesync/v1/*.proto` with `protox` (pure Rust, no system `protoc`), writes
//! the encoded file descriptor set to `$OUT_DIR/sitesync_descriptor.bin` (exported as
//! `FILE_DESCRIPTOR_SET` for server reflection), and generates the messages, clients and
//! servers with `tonic-prost-build` from that same descriptor set.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::{env, fs};

/// The include root: files are named `sitesync/v1/<name>.proto` relative to it, which is also
/// the name reflection clients see.
const PROTO_ROOT: &str = "proto";

/// Messages whose `Debug` is written by hand (see `src/lib.rs`).
const DEBUG_BY_HAND: [&str; 3] = [
    ".sitesync.v1.UpdateDocument",
    ".sitesync.v1.UpdateRevision",
    ".sitesync.v1.FileChunk",
];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");

    let files = proto_files(&Path::new(PROTO_ROOT).join("sitesync/v1"))?;

    let mut compiler = protox::Compiler::new([PROTO_ROOT])?;
    // Imports (google/protobuf/*.proto) must be in the set, or reflection clients cannot
    // resolve our messages; source info carries the comments into generated docs and into
    // what reflection clients show.
    compiler.include_imports(true).include_source_info(true);
    for file in &files {
        compiler
            .open_file(file)
            .map_err(|e| format!("{}: {e}", file.display()))?;
    }

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("sitesync_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // These carry documents and file bytes (up to megabytes); src/lib.rs gives them a
        // Debug that prints lengths, so a logged message cannot flood a log.
        .skip_debug(DEBUG_BY_HAND)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}

/// Every `.proto` file of the package, sorted, so that adding a file needs no change here and
/// the output does not depend on directory order.
fn proto_files(dir: &Path) -> Result<Vec<PathBuf>, Box<dyn Error>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "proto") {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(format!("no .proto files in {}", dir.display()).into());
    }
    Ok(files)
}

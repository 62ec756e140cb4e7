//! Declares the `fuzzing` cfg that cargo-fuzz sets, under which the fuzz target may read a
//! file's chunks without a trusted signature (`Archive::trust_unverified_for_fuzzing`).

fn main() {
    println!("cargo::rustc-check-cfg=cfg(fuzzing)");
}

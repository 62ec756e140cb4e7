//! `sitesyncctl export inspect` and the refusals of `export` and `import` that come before
//! any node is asked, run as the built binary on export files written here with the
//! archive crate's own writer and a CA made for the test.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

mod support;
use support::archive::{ExportFixture as Fixture, LOG};

/// Runs the built `sitesyncctl` in `dir` (where no `./sitesync-data/pki` is), with no
/// `SITESYNC_*` setting of the test's environment.
fn sitesyncctl(dir: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sitesyncctl"));
    sitesync_supervise::clear_sitesync_environment(&mut command);
    command
        .current_dir(dir)
        .args(args)
        .output()
        .expect("sitesyncctl runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            text(&output.stdout),
            text(&output.stderr)
        )
    })
}

fn succeeded(output: &Output) {
    assert!(
        output.status.success(),
        "sitesyncctl failed: {}",
        text(&output.stderr)
    );
}

#[test]
fn inspect_shows_the_header_without_a_node() {
    let fixture = Fixture::new();
    let file = fixture.arg("cen.ssx");
    let output = sitesyncctl(fixture.dir.path(), &["export", "inspect", &file]);
    succeeded(&output);
    let table = text(&output.stdout);
    for expected in [
        "incremental",
        "CEN",
        "12 (top site CEN, issued 2025-01-31T08:00:00Z, expires 2025-02-07T08:00:00Z)",
        &format!("{LOG}:10"),
        &format!("{LOG}:40"),
        "snapshot 0, new 0, changed 0, expired 0, deleted 30",
        "1234",
        &"07".repeat(8),
        "not checked",
    ] {
        assert!(
            table.contains(expected),
            "{expected:?} is missing:\n{table}"
        );
    }
    assert!(!table.contains(&"07".repeat(9)), "{table}");

    let output = sitesyncctl(
        fixture.dir.path(),
        &["export", "inspect", &file, "--output", "json"],
    );
    succeeded(&output);
    let view = json(&output);
    assert_eq!(view["file"], file);
    assert_eq!(view["format_version"], 1);
    assert_eq!(view["source_site"], "CEN");
    assert_eq!(view["kind"], "incremental");
    assert_eq!(view["catalog_version"]["version"], 12);
    assert_eq!(view["catalog_version"]["top_site_code"], "CEN");
    assert_eq!(view["catalog_version"]["issued_at"], "2025-01-31T08:00:00Z");
    assert_eq!(
        view["catalog_version"]["expires_at"],
        "2025-02-07T08:00:00Z"
    );
    assert_eq!(view["base"], format!("{LOG}:10"));
    assert_eq!(view["target"], format!("{LOG}:40"));
    assert_eq!(view["revisions"]["deleted"], 30);
    assert_eq!(view["revisions"]["new"], 0);
    assert_eq!(view["revisions"]["snapshot"], 0);
    assert_eq!(view["revisions"]["revision_count"], 1_234);
    assert_eq!(view["update_server_digest"], "07".repeat(32));
    assert_eq!(view["site_database_digest"], "09".repeat(32));
    let length = std::fs::metadata(fixture.path("cen.ssx")).unwrap().len();
    assert_eq!(view["bytes"], length);
    assert_eq!(view["created_at"], "2025-01-31T07:53:20Z");
    assert_eq!(view["chunks"], 3);
    assert_eq!(view["signer"], Value::Null);
    assert_eq!(view["verified"], Value::Null);
    assert_eq!(view["error"], Value::Null);
}

#[test]
fn verify_checks_the_signature_against_trust_or_the_pki_dir() {
    let fixture = Fixture::new();
    let file = fixture.arg("cen.ssx");
    let ca = fixture.arg("pki/ca.pem");
    let output = sitesyncctl(
        fixture.dir.path(),
        &[
            "-o", "json", "export", "inspect", &file, "--verify", "--trust", &ca,
        ],
    );
    succeeded(&output);
    let view = json(&output);
    assert_eq!(view["verified"], true);
    assert_eq!(view["signer"], "CEN");
    assert_eq!(view["error"], Value::Null);

    // The hierarchy CA of the TLS flags, as node commands use it.
    let pki = fixture.arg("pki");
    let output = sitesyncctl(
        fixture.dir.path(),
        &["--pki-dir", &pki, "export", "inspect", &file, "--verify"],
    );
    succeeded(&output);
    let table = text(&output.stdout);
    assert!(table.contains("yes: signature and every chunk"), "{table}");

    // Another hierarchy's CA alone does not vouch for CEN's key.
    let other = fixture.arg("other/ca.pem");
    let output = sitesyncctl(
        fixture.dir.path(),
        &[
            "-o", "json", "export", "inspect", &file, "--verify", "--trust", &other,
        ],
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let view = json(&output);
    assert_eq!(view["verified"], false);
    assert_eq!(view["signer"], Value::Null);
    assert!(
        view["error"]
            .as_str()
            .unwrap()
            .contains("the manifest's signature is refused"),
        "{view}"
    );
    // Trusting both is enough.
    let output = sitesyncctl(
        fixture.dir.path(),
        &[
            "export", "inspect", &file, "--verify", "--trust", &other, "--trust", &ca,
        ],
    );
    succeeded(&output);
}

#[test]
fn a_flipped_byte_fails_verify_naming_the_chunk() {
    let fixture = Fixture::new();
    let damaged = fixture.damaged(1);
    let damaged = damaged.to_str().unwrap();
    let ca = fixture.arg("pki/ca.pem");

    // Without --verify the header still reads: the damage is in a chunk.
    let output = sitesyncctl(fixture.dir.path(), &["export", "inspect", damaged]);
    succeeded(&output);

    let output = sitesyncctl(
        fixture.dir.path(),
        &[
            "-o", "json", "export", "inspect", damaged, "--verify", "--trust", &ca,
        ],
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let view = json(&output);
    assert_eq!(view["verified"], false);
    assert_eq!(view["kind"], "incremental");
    assert_eq!(view["chunks"], 3);
    let error = view["error"].as_str().unwrap();
    assert!(
        error.starts_with("chunk 1 (offset ")
            && error.contains("does not match the signed manifest"),
        "{error}"
    );
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!("error: {damaged} does not verify: chunk 1 ")),
        "{stderr}"
    );

    let output = sitesyncctl(
        fixture.dir.path(),
        &["export", "inspect", damaged, "--verify", "--trust", &ca],
    );
    assert_eq!(output.status.code(), Some(1));
    let table = text(&output.stdout);
    assert!(table.contains("NO: see the error"), "{table}");
    assert!(text(&output.stderr).contains("chunk 1 (offset"));
}

#[test]
fn verify_without_a_ca_says_how_to_give_one() {
    let fixture = Fixture::new();
    let file = fixture.arg("cen.ssx");
    let output = sitesyncctl(
        fixture.dir.path(),
        &["export", "inspect", &file, "--verify"],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("pass --trust CA_PEM, or --pki-dir DIR"),
        "{stderr}"
    );
    // --trust without --verify is a usage error.
    let ca = fixture.arg("pki/ca.pem");
    let output = sitesyncctl(
        fixture.dir.path(),
        &["export", "inspect", &file, "--trust", &ca],
    );
    assert_eq!(output.status.code(), Some(64));
}

#[test]
fn a_file_that_is_no_export_is_refused_before_any_node_is_asked() {
    let fixture = Fixture::new();
    let notes = fixture.path("notes.txt");
    std::fs::write(&notes, "PK\x03\x04 a zip file, not an export").unwrap();
    let notes = notes.to_str().unwrap();
    let output = sitesyncctl(fixture.dir.path(), &["export", "inspect", notes]);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!("error: {notes}: not a sitesync export file")),
        "{stderr}"
    );

    // No node listens there: a refusal with status 1, not "unreachable" (2), shows that
    // the file was refused first.
    let nowhere = ["--node", "127.0.0.1:1", "--insecure"];
    let output = sitesyncctl(
        fixture.dir.path(),
        &[&nowhere[..], &["import", notes]].concat(),
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("not a sitesync export file"),
        "{}",
        text(&output.stderr)
    );

    let out = fixture.arg("next.ssx");
    let output = sitesyncctl(
        fixture.dir.path(),
        &[&nowhere[..], &["export", "--out", &out, "--since", notes]].concat(),
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("--since: "),
        "{}",
        text(&output.stderr)
    );

    // An existing file is kept without --force.
    let existing = fixture.arg("cen.ssx");
    let output = sitesyncctl(
        fixture.dir.path(),
        &[&nowhere[..], &["export", "--out", &existing]].concat(),
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("exists: pass --force to replace it"),
        "{}",
        text(&output.stderr)
    );
    // With --force, or a good --since file and a new name, the node is asked (and cannot
    // be reached): nothing is written or left behind.
    for args in [
        &["export", "--out", &existing, "--force"][..],
        &["export", "--out", &out, "--since", &existing],
    ] {
        let output = sitesyncctl(fixture.dir.path(), &[&nowhere[..], args].concat());
        assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    }
    assert_eq!(fixture.entries(), ["cen.ssx", "notes.txt", "other", "pki"]);
}

//! `sitesyncctl pki` end to end: a CA, site and operator certificates with private keys
//! only their owner can read, revocation, and clear refusals.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use sitesync_security::Identity;

fn sitesyncctl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sitesyncctl"))
        .args(args)
        .env_remove("SITESYNC_PKI_DIR")
        .output()
        .unwrap()
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_ca_issues_site_and_operator_certificates_and_revokes_them() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("pki");
    let dir_arg = dir.to_str().unwrap();
    assert!(
        sitesyncctl(&["pki", "init", "--dir", dir_arg])
            .status
            .success()
    );
    assert_eq!(mode(&dir.join("ca.key")), 0o600);

    let out = sitesyncctl(&[
        "--output",
        "json",
        "pki",
        "issue",
        "--dir",
        dir_arg,
        "site",
        "pr1",
        "--host",
        "pr1.example.org",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let issued: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(issued["identity"], "site PR1");
    let certificate = std::path::PathBuf::from(issued["certificate"].as_str().unwrap());
    let key = std::path::PathBuf::from(issued["key"].as_str().unwrap());
    assert_eq!(mode(&key), 0o600);
    let der =
        sitesync_security::pki::first_certificate(&std::fs::read(&certificate).unwrap()).unwrap();
    assert_eq!(
        Identity::from_certificate(&der).unwrap(),
        Identity::site("PR1").unwrap()
    );

    let out = sitesyncctl(&["pki", "issue", "--dir", dir_arg, "operator", "alice"]);
    assert!(out.status.success());
    assert_eq!(mode(&dir.join("operators/alice.key")), 0o600);
    let alice = dir.join("operators/alice.pem");
    let out = sitesyncctl(&[
        "--output",
        "json",
        "pki",
        "revoke",
        "--dir",
        dir_arg,
        alice.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let revoked: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(revoked["identity"], "operator alice");
    assert!(
        std::fs::read_to_string(dir.join("revoked.txt"))
            .unwrap()
            .contains(revoked["serial"].as_str().unwrap())
    );
}

#[test]
fn bad_requests_are_refused_and_change_nothing() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("pki");
    let dir_arg = dir.to_str().unwrap();
    let out = sitesyncctl(&["pki", "issue", "--dir", dir_arg, "site", "PR1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sitesyncctl pki init"));
    assert!(!dir.exists());

    assert!(
        sitesyncctl(&["pki", "init", "--dir", dir_arg])
            .status
            .success()
    );
    let ca = std::fs::read(dir.join("ca.pem")).unwrap();
    let out = sitesyncctl(&["pki", "init", "--dir", dir_arg]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds"));
    assert_eq!(std::fs::read(dir.join("ca.pem")).unwrap(), ca);
    // A start-up step that runs every time keeps the CA and succeeds.
    let kept = sitesyncctl(&["pki", "init", "--if-missing", "--dir", dir_arg]);
    assert!(
        kept.status.success(),
        "{}",
        String::from_utf8_lossy(&kept.stderr)
    );
    assert_eq!(std::fs::read(dir.join("ca.pem")).unwrap(), ca);

    for bad in [["site", "TOOLONG"], ["operator", "a b"]] {
        let out = sitesyncctl(&["pki", "issue", "--dir", dir_arg, bad[0], bad[1]]);
        assert_eq!(out.status.code(), Some(1), "{bad:?}");
    }
    assert!(!dir.join("sites").exists() && !dir.join("operators").exists());
}

#[test]
fn a_publisher_certificate_names_its_vendor_and_refuses_microsofts_names() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("pki");
    let dir_arg = dir.to_str().unwrap();
    assert!(
        sitesyncctl(&["pki", "init", "--dir", dir_arg])
            .status
            .success()
    );
    let out = sitesyncctl(&[
        "--output",
        "json",
        "pki",
        "issue",
        "--dir",
        dir_arg,
        "publisher",
        "contoso",
        "--vendor",
        "Contoso Ltd",
        "--expires",
        "2099-06-30",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let issued: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(issued["identity"], "publisher contoso");
    assert_eq!(issued["vendor"], "Contoso Ltd");
    assert_eq!(issued["not_after"], "2099-06-30T23:59:59Z");
    assert_eq!(mode(&dir.join("publishers/contoso.key")), 0o600);
    let pem = std::fs::read(issued["certificate"].as_str().unwrap()).unwrap();
    let publisher = sitesync_security::PublisherCertificate::from_pem(&pem).unwrap();
    assert_eq!(publisher.vendor.as_str(), "Contoso Ltd");

    // Refused, each with its reason, nothing written.
    for (vendor, expires, reason) in [
        ("Microsoft Corporation", "2099-01-01", "Microsoft's names"),
        ("Local publisher", "2099-01-01", "not a vendor"),
        ("Fabrikam", "2001-01-01", "has passed"),
        ("Fabrikam", "next year", "YYYY-MM-DD"),
    ] {
        let out = sitesyncctl(&[
            "pki",
            "issue",
            "--dir",
            dir_arg,
            "publisher",
            "fabrikam",
            "--vendor",
            vendor,
            "--expires",
            expires,
        ]);
        assert_eq!(out.status.code(), Some(1), "{vendor} {expires}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(reason), "{vendor} {expires}: {stderr}");
    }
    assert!(!dir.join("publishers/fabrikam.pem").exists());
}

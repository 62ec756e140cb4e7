//! The certificates of test hierarchies: one CA per test process, a site certificate per
//! node written into the node's own PKI directory, and an operator certificate for the
//! tests' own calls — so tests run with mutual TLS, as nodes do by default.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use sitesync_security::pki::{Authority, DEFAULT_VALIDITY};
use sitesync_security::{Identity, TlsContext, TlsFiles, Transport};

struct TestAuthority {
    _dir: tempfile::TempDir,
    authority: Mutex<Authority>,
}

fn authority() -> &'static TestAuthority {
    static AUTHORITY: OnceLock<TestAuthority> = OnceLock::new();
    AUTHORITY.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let authority = Authority::init(dir.path(), "tests").unwrap();
        TestAuthority {
            _dir: dir,
            authority: Mutex::new(authority),
        }
    })
}

/// The test CA's directory (`ca.pem`, `crl.pem`, `ca.key`).
pub fn authority_dir() -> PathBuf {
    authority().authority.lock().unwrap().dir().to_owned()
}

/// Writes a PKI directory for `identity` at `dir` in the layout `sitesyncctl pki` makes:
/// `ca.pem`, `crl.pem` and `sites/CODE.pem` + `.key` (or `operators/NAME...`).
pub fn issue_into(dir: &Path, identity: &Identity) -> TlsFiles {
    {
        let authority = authority().authority.lock().unwrap();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::copy(authority.certificate_path(), dir.join("ca.pem")).unwrap();
        std::fs::copy(authority.crl_path(), dir.join("crl.pem")).unwrap();
    }
    let files = TlsFiles::in_pki_dir(dir, identity);
    reissue(&files, identity);
    files
}

/// The transport of the tests' operator (`operator tester`).
pub fn operator() -> Transport {
    static OPERATOR: OnceLock<(tempfile::TempDir, Arc<TlsContext>)> = OnceLock::new();
    let (_, context) = OPERATOR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let files = issue_into(dir.path(), &Identity::operator("tester").unwrap());
        (dir, TlsContext::load(files).unwrap())
    });
    Transport::Tls(context.clone())
}

/// The transport of a site identity, for tests that call as a site would.
pub fn site(code: &str) -> (tempfile::TempDir, Transport) {
    let dir = tempfile::tempdir().unwrap();
    let files = issue_into(dir.path(), &Identity::site(code).unwrap());
    (dir, Transport::Tls(TlsContext::load(files).unwrap()))
}

/// Issues a new certificate and key for `identity` in place of `files` (a rotation), from
/// the tests' CA.
pub fn reissue(files: &TlsFiles, identity: &Identity) {
    authority()
        .authority
        .lock()
        .unwrap()
        .issue_to(
            identity,
            &[],
            DEFAULT_VALIDITY,
            &files.certificate,
            &files.key,
        )
        .unwrap();
}

/// Revokes the certificate in `certificate` at the tests' CA; returns the CA's revocation
/// list, now naming it, for a test to hand to the nodes that should know.
pub fn revoke(certificate: &Path) -> PathBuf {
    let authority = authority().authority.lock().unwrap();
    authority.revoke(certificate).unwrap();
    authority.crl_path()
}

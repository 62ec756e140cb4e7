//! `sitesyncctl pki`: the hierarchy's certificate authority on local files — `init` creates
//! it, `issue site CODE` and `issue operator NAME` issue certificates, `revoke FILE` adds a
//! certificate to the revocation list nodes read. Private keys are written with mode 0600.

use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;
use sitesync_security::Identity;
use sitesync_security::pki::Authority;

use crate::cli::{IssueKind, PkiCommand};
use crate::output::{self, OutputFormat};

/// What every `pki` command prints as JSON.
#[derive(Debug, Serialize)]
struct PkiView {
    action: &'static str,
    directory: String,
    identity: Option<String>,
    certificate: Option<String>,
    key: Option<String>,
    serial: Option<String>,
    not_after: Option<String>,
    ca_certificate: String,
    revocation_list: String,
}

pub fn run(command: &PkiCommand, format: OutputFormat) -> anyhow::Result<ExitCode> {
    let view = match command {
        PkiCommand::Init(args) => match Authority::open(&args.dir) {
            Ok(authority) if args.if_missing => view("kept", &authority, None),
            _ => {
                let authority = Authority::init(&args.dir, &args.name)?;
                view("init", &authority, None)
            }
        },
        PkiCommand::Issue(args) => {
            let authority = Authority::open(&args.dir)?;
            let identity = match &args.kind {
                IssueKind::Site { code, host } => (Identity::site(code)?, host.clone()),
                IssueKind::Operator { name } => (Identity::operator(name)?, Vec::new()),
            };
            let validity = Duration::from_secs(u64::from(args.days) * 24 * 3600);
            let issued = authority.issue(&identity.0, &identity.1, validity)?;
            let mut view = view("issue", &authority, Some(&issued.identity));
            view.certificate = Some(issued.certificate.display().to_string());
            view.key = Some(issued.key.display().to_string());
            view.serial = Some(issued.serial);
            view.not_after = issued
                .not_after
                .format(&time::format_description::well_known::Rfc3339)
                .ok();
            view
        }
        PkiCommand::Revoke(args) => {
            let authority = Authority::open(&args.dir)?;
            let (identity, serial) = authority.revoke(&args.certificate)?;
            let mut view = view("revoke", &authority, Some(&identity));
            view.certificate = Some(args.certificate.display().to_string());
            view.serial = Some(serial);
            view
        }
    };
    match format {
        OutputFormat::Json => output::print_json(&view)?,
        OutputFormat::Table | OutputFormat::Dot => {
            let fields = [
                ("action", Some(view.action.to_owned())),
                ("directory", Some(view.directory.clone())),
                ("identity", view.identity.clone()),
                ("certificate", view.certificate.clone()),
                ("private key (0600)", view.key.clone()),
                ("serial", view.serial.clone()),
                ("valid until", view.not_after.clone()),
                ("CA certificate", Some(view.ca_certificate.clone())),
                ("revocation list", Some(view.revocation_list.clone())),
            ];
            output::print_table(&output::name_value_table(
                fields
                    .into_iter()
                    .filter_map(|(name, value)| Some((name, value?))),
            ))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn view(action: &'static str, authority: &Authority, identity: Option<&Identity>) -> PkiView {
    PkiView {
        action,
        directory: authority.dir().display().to_string(),
        identity: identity.map(ToString::to_string),
        certificate: None,
        key: None,
        serial: None,
        not_after: None,
        ca_certificate: authority.certificate_path().display().to_string(),
        revocation_list: authority.crl_path().display().to_string(),
    }
}

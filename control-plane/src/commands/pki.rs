//! `sitesyncctl pki`: the hierarchy's certificate authority on local files — `init` creates
//! it, `issue site CODE`, `issue operator NAME` and `issue publisher NAME --vendor VENDOR`
//! issue certificates, `revoke FILE` adds a certificate to the revocation list nodes read.
//! Private keys are written with mode 0600.

use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;
use sitesync_security::pki::{Authority, Issued};
use sitesync_security::{Identity, Vendor};

use crate::cli::{IssueKind, PkiCommand};
use crate::output::{self, OutputFormat};

/// What every `pki` command prints as JSON.
#[derive(Debug, Serialize)]
struct PkiView {
    action: &'static str,
    directory: String,
    identity: Option<String>,
    /// A publisher's vendor namespace.
    vendor: Option<String>,
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
            let validity = Duration::from_secs(u64::from(args.days) * 24 * 3600);
            let (issued, vendor) = match &args.kind {
                IssueKind::Site { code, host } => (
                    authority.issue(&Identity::site(code)?, host, validity)?,
                    None,
                ),
                IssueKind::Operator { name } => (
                    authority.issue(&Identity::operator(name)?, &[], validity)?,
                    None,
                ),
                IssueKind::Publisher {
                    name,
                    vendor,
                    expires,
                } => issue_publisher(&authority, name, vendor, expires.as_deref(), validity)?,
            };
            let mut view = view("issue", &authority, Some(&issued.identity));
            view.vendor = vendor;
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
                ("vendor", view.vendor.clone()),
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
        vendor: None,
        certificate: None,
        key: None,
        serial: None,
        not_after: None,
        ca_certificate: authority.certificate_path().display().to_string(),
        revocation_list: authority.crl_path().display().to_string(),
    }
}

/// A publisher's certificate, valid until the end of the day `expires` (UTC, `YYYY-MM-DD`)
/// or for `validity`.
fn issue_publisher(
    authority: &Authority,
    name: &str,
    vendor: &str,
    expires: Option<&str>,
    validity: Duration,
) -> anyhow::Result<(Issued, Option<String>)> {
    let vendor = Vendor::new(vendor)?;
    let not_after = match expires {
        Some(date) => crate::units::end_of_day(date, "--expires")?,
        None => time::OffsetDateTime::now_utc() + validity,
    };
    let issued = authority.issue_publisher(name, &vendor, not_after)?;
    Ok((issued, Some(vendor.to_string())))
}

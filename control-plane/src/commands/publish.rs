//! `sitesyncctl publish FILE`, `publish revise ID FILE`, `publish expire ID`
//! (`Admin.PublishUpdate`) and `sitesyncctl publishers list|add|rotate|revoke`
//! (`Admin.ListPublishers`, `DelegatePublisher`, `RevokePublisher`): custom updates (S6).
//!
//! The publisher's key never leaves this machine: the update's document, and its vendor's
//! and product's categories, are written and sealed here (sitesync-metadata's `custom`
//! module), and the node checks the seals against the publisher's delegation before it
//! keeps anything. A description is checked field by field before anything is signed or
//! sent, so a bad file is refused here with the field named.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, anyhow, bail};
use comfy_table::Table;
use serde::Serialize;
use sitesync_metadata::custom::describe::{self, Description, FIRST_REVISION};
use sitesync_metadata::custom::{self, Seal};
use sitesync_metadata::{
    ParseLimits, RevisionId, Timestamp, UpdateId, UpdateRevision, UpdateType, parse_update,
};
use sitesync_proto::convert::{timestamp_from_wire, timestamp_to_wire};
use sitesync_proto::v1;
use sitesync_security::signing::Signer;
use sitesync_security::{Identity, PublisherCertificate};

use crate::cli::{
    Cli, DEFAULT_NODE_PKI_DIR, PublishArgs, PublishCommand, PublisherArgs, PublishersCommand,
};
use crate::client::{Node, printable, unary};
use crate::output::{self, OutputFormat};
use crate::views::StoreView;

/// The largest description file read.
const MAX_DESCRIPTION_BYTES: u64 = 1 << 20;

pub fn run(cli: &Cli, args: &PublishArgs) -> anyhow::Result<ExitCode> {
    let output = cli.output;
    match &args.command {
        None => {
            let file = args.file.as_deref().context("FILE is required")?;
            let publisher = Publisher::load(cli, &args.publisher)?;
            let update = Update::read(file, args.product.as_deref(), &publisher)?;
            super::on_node(cli, |node| async move {
                let (id, revision) = match &update {
                    Update::Document { id, .. } => (id.update_id, id.revision),
                    Update::Described(_) => (
                        UpdateId::from_bytes(*uuid::Uuid::new_v4().as_bytes()),
                        FIRST_REVISION,
                    ),
                };
                let documents = update.sealed(&publisher, id, revision)?;
                send(node, documents, &publisher, output).await
            })
        }
        Some(PublishCommand::Revise(revise)) => {
            let id = parse_id(&revise.id)?;
            let publisher = Publisher::load(cli, &revise.publisher)?;
            let update = Update::read(&revise.file, revise.product.as_deref(), &publisher)?;
            super::on_node(cli, |mut node| async move {
                let latest = published(&mut node, id).await?;
                check_vendor(&latest, &publisher)?;
                let documents = update.sealed(&publisher, id, latest.id.revision + 1)?;
                send(node, documents, &publisher, output).await
            })
        }
        Some(PublishCommand::Expire(expire)) => {
            let id = parse_id(&expire.id)?;
            let publisher = Publisher::load(cli, &expire.publisher)?;
            super::on_node(cli, |mut node| async move {
                let latest = published(&mut node, id).await?;
                let seal = check_vendor(&latest, &publisher)?;
                let unsealed = describe::render_expired(&latest, latest.id.revision + 1, now());
                let document = publisher.seal(&unsealed, &seal.product)?;
                send(node, vec![document], &publisher, output).await
            })
        }
    }
}

fn now() -> Timestamp {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    Timestamp(i64::try_from(millis).unwrap_or(i64::MAX))
}

fn parse_id(text: &str) -> anyhow::Result<UpdateId> {
    text.parse::<UpdateId>().map_err(|e| anyhow!("ID: {e}"))
}

/// The publisher's key and what its certificate says.
struct Publisher {
    signer: Signer,
    certificate: PublisherCertificate,
}

impl Publisher {
    fn load(cli: &Cli, args: &PublisherArgs) -> anyhow::Result<Self> {
        let (certificate, key) = match (&args.publisher_cert, &args.publisher_key, &args.publisher)
        {
            (Some(certificate), Some(key), _) => (certificate.clone(), key.clone()),
            (None, None, Some(name)) => {
                let dir = cli
                    .node
                    .tls
                    .pki_dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_NODE_PKI_DIR));
                let publishers = dir.join("publishers");
                (
                    publishers.join(format!("{name}.pem")),
                    publishers.join(format!("{name}.key")),
                )
            }
            _ => bail!(
                "say which publisher signs: --publisher NAME (its certificate in the PKI directory's publishers/), or --publisher-cert FILE with --publisher-key FILE"
            ),
        };
        let signer = Signer::from_files(&certificate, &key)?;
        if !matches!(signer.identity(), Identity::Publisher(_)) {
            bail!(
                "{} is the certificate of {}, not of a publisher: issue one with `sitesyncctl pki issue publisher NAME --vendor VENDOR`",
                certificate.display(),
                signer.identity()
            );
        }
        let pem = std::fs::read(&certificate)
            .with_context(|| format!("cannot read {}", certificate.display()))?;
        let certificate = PublisherCertificate::from_pem(&pem)
            .map_err(|e| anyhow!("{}: {e}", certificate.display()))?;
        let now = now().unix_millis() / 1000;
        if certificate.not_after <= now {
            bail!(
                "the certificate of publisher {} expired at {}; issue a new one and rotate the delegation (`sitesyncctl publishers rotate`)",
                certificate.name,
                Timestamp(certificate.not_after * 1000)
            );
        }
        Ok(Self {
            signer,
            certificate,
        })
    }

    fn vendor(&self) -> &str {
        self.certificate.vendor.as_str()
    }

    /// `unsealed` with this publisher's seal over it, for `product`.
    fn seal(&self, unsealed: &[u8], product: &str) -> anyhow::Result<Vec<u8>> {
        let message = custom::sealed_message(self.vendor(), product, unsealed);
        let (_, signature, certificate) = self.signer.sign(&message)?;
        Ok(custom::seal(
            unsealed,
            &Seal {
                publisher: self.certificate.name.clone(),
                vendor: self.vendor().to_owned(),
                product: product.to_owned(),
                signature,
                certificate,
                accepted: None,
            },
        )?)
    }
}

/// What FILE holds: a checked description, or an update document.
enum Update {
    Described(Box<describe::Checked>),
    Document {
        document: Vec<u8>,
        product: String,
        id: RevisionId,
    },
}

impl Update {
    fn read(path: &Path, product: Option<&str>, publisher: &Publisher) -> anyhow::Result<Self> {
        let name = path.display().to_string();
        let size = std::fs::metadata(path)
            .with_context(|| format!("cannot read {name}"))?
            .len();
        let limit = ParseLimits::default().max_document_bytes as u64;
        if size > limit.max(MAX_DESCRIPTION_BYTES) {
            bail!("{name} is {size} bytes, more than a description or an update document may be");
        }
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {name}"))?;
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let looks_xml = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'<');
        if extension.as_deref() == Some("xml") || (extension.is_none() && looks_xml) {
            return Self::document(&name, bytes, product, publisher);
        }
        if product.is_some() {
            bail!("--product is for an update XML document; a description names its product");
        }
        let text = String::from_utf8(bytes).map_err(|_| anyhow!("{name} is not UTF-8 text"))?;
        let description: Description = match extension.as_deref() {
            Some("json") => serde_json::from_str(&text).map_err(|e| anyhow!("{name}: {e}"))?,
            Some("toml") => toml::from_str(&text).map_err(|e| anyhow!("{name}: {e}"))?,
            _ if text.trim_start().starts_with('{') => {
                serde_json::from_str(&text).map_err(|e| anyhow!("{name}: {e}"))?
            }
            _ => toml::from_str(&text).map_err(|e| anyhow!("{name}: {e}"))?,
        };
        let checked = description
            .check(publisher.vendor())
            .map_err(|e| anyhow!("{name}: {e}"))?;
        Ok(Self::Described(Box::new(checked)))
    }

    /// An update document as given: it must parse, be a software or driver update, and
    /// name the vendor's product.
    fn document(
        name: &str,
        mut bytes: Vec<u8>,
        product: Option<&str>,
        publisher: &Publisher,
    ) -> anyhow::Result<Self> {
        let product = product.context(
            "an update XML document needs --product: the product of the publisher's vendor it belongs to",
        )?;
        while bytes.last().is_some_and(u8::is_ascii_whitespace) {
            bytes.pop();
        }
        let revision =
            parse_update(&bytes, &ParseLimits::default()).map_err(|e| anyhow!("{name}: {e}"))?;
        if matches!(
            revision.update_type,
            UpdateType::Category | UpdateType::Detectoid
        ) {
            bail!(
                "{name} is a {:?} update; publish software or driver updates (categories are made for you)",
                revision.update_type
            );
        }
        custom::check_namespace(&revision, publisher.vendor(), product)
            .map_err(|e| anyhow!("{name}: {e}"))?;
        Ok(Self::Document {
            document: bytes,
            product: product.to_owned(),
            id: revision.id,
        })
    }

    fn product(&self) -> &str {
        match self {
            Self::Described(checked) => &checked.product,
            Self::Document { product, .. } => product,
        }
    }

    /// The sealed documents to send: the vendor's category, the product's, and revision
    /// `revision` of update `id` (a document keeps its own identity).
    fn sealed(
        &self,
        publisher: &Publisher,
        id: UpdateId,
        revision: u32,
    ) -> anyhow::Result<Vec<Vec<u8>>> {
        let now = now();
        let vendor = publisher.vendor();
        let product = self.product();
        let update = match self {
            Self::Described(checked) => describe::render_update(
                checked,
                RevisionId {
                    update_id: id,
                    revision,
                },
                now,
            ),
            Self::Document {
                document, id: own, ..
            } => {
                // A document keeps its own identity: it must be the revision asked for.
                if own.update_id != id || own.revision < revision {
                    bail!(
                        "the document is revision {} of update {}; expected update {id} at revision {revision} or above",
                        own.revision,
                        own.update_id
                    );
                }
                document.clone()
            }
        };
        Ok(vec![
            publisher.seal(&describe::render_vendor_category(vendor, now), "")?,
            publisher.seal(
                &describe::render_product_category(vendor, product, now),
                product,
            )?,
            publisher.seal(&update, product)?,
        ])
    }
}

/// The latest published revision of `id`, parsed.
async fn published(node: &mut Node, id: UpdateId) -> anyhow::Result<UpdateRevision> {
    let response = node
        .admin
        .get_update(unary(v1::GetUpdateRequest {
            update_id: Some(id.into()),
            revision: None,
            store: v1::StoreSelector::Publications.into(),
        }))
        .await
        .map_err(|status| node.failed("Admin.GetUpdate", status))?
        .into_inner();
    let wire = response
        .revision
        .context("the node's answer has no revision")?;
    UpdateRevision::try_from(wire).map_err(|e| anyhow!("the node sent an unreadable update: {e}"))
}

/// The seal of a published revision, which must be of this publisher's vendor.
fn check_vendor(latest: &UpdateRevision, publisher: &Publisher) -> anyhow::Result<Seal> {
    let (seal, _) = custom::unseal(&latest.document)?
        .ok_or_else(|| anyhow!("update {} is not a custom update", latest.id.update_id))?;
    if seal.vendor != publisher.vendor() {
        bail!(
            "update {} is published for vendor `{}`; publisher {} publishes for `{}`",
            latest.id.update_id,
            seal.vendor,
            publisher.certificate.name,
            publisher.vendor()
        );
    }
    Ok(seal)
}

/// What `publish` prints.
#[derive(Debug, Serialize)]
struct PublishedView {
    update_id: String,
    revision: u32,
    /// `new`, `changed` (a revision) or `expired`.
    kind: &'static str,
    publisher: String,
    vendor: String,
    /// The catalog version that first carries it.
    accepted_version: u64,
    /// The sync started to take it into the update server and down the tree; null when
    /// `Local publisher` is not selected.
    sync_id: Option<u64>,
    publications: Option<StoreView>,
}

async fn send(
    mut node: Node,
    documents: Vec<Vec<u8>>,
    publisher: &Publisher,
    output: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let response = node
        .admin
        .publish_update(unary(v1::PublishUpdateRequest { documents }))
        .await
        .map_err(|status| node.failed("Admin.PublishUpdate", status))?
        .into_inner();
    let id = response
        .id
        .clone()
        .and_then(|id| RevisionId::try_from(id).ok())
        .context("the node's answer names no revision")?;
    let view = PublishedView {
        update_id: id.update_id.to_string(),
        revision: id.revision,
        kind: match response.kind() {
            v1::ChangeKind::New => "new",
            v1::ChangeKind::Expired => "expired",
            _ => "changed",
        },
        publisher: publisher.certificate.name.clone(),
        vendor: publisher.vendor().to_owned(),
        accepted_version: response.accepted_version,
        sync_id: (response.sync_id != 0).then_some(response.sync_id),
        publications: response.publications.as_ref().map(StoreView::new),
    };
    match output {
        OutputFormat::Json => output::print_json(&view)?,
        OutputFormat::Table | OutputFormat::Dot => {
            let sync = match view.sync_id {
                Some(id) => format!("sync {id} takes it into the update server and down the tree"),
                None => "none: `Local publisher` is not among the selected products (sitesyncctl settings set --products)".to_owned(),
            };
            output::print_table(&output::name_value_table([
                ("update", view.update_id.clone()),
                ("revision", format!("{} ({})", view.revision, view.kind)),
                (
                    "publisher",
                    format!("{} for vendor `{}`", view.publisher, view.vendor),
                ),
                (
                    "accepted at",
                    format!("catalog version {}", view.accepted_version),
                ),
                ("sync", sync),
            ]))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `publishers list` prints of one delegation.
#[derive(Debug, Serialize)]
struct DelegationView {
    publisher: String,
    vendor: String,
    key_id: String,
    added_at: Option<String>,
    retired_at: Option<String>,
    expires_at: Option<String>,
    /// `active`, `retired` or `expired`.
    state: &'static str,
}

impl DelegationView {
    fn new(wire: &v1::PublisherDelegation) -> Self {
        let time =
            |t: &Option<prost_types::Timestamp>| (*t).and_then(|t| timestamp_from_wire(t).ok());
        let expires = time(&wire.expires_at);
        let state = if wire.retired_at.is_some() {
            "retired"
        } else if expires.is_some_and(|e| e <= now()) {
            "expired"
        } else {
            "active"
        };
        Self {
            publisher: printable(&wire.publisher),
            vendor: printable(&wire.vendor),
            key_id: custom::key_id(&wire.public_key),
            added_at: time(&wire.added_at).map(|t| t.to_string()),
            retired_at: time(&wire.retired_at).map(|t| t.to_string()),
            expires_at: expires.map(|t| t.to_string()),
            state,
        }
    }
}

fn delegation_table(delegations: &[DelegationView]) -> Table {
    let mut table = output::table();
    table.set_header([
        "publisher",
        "vendor",
        "key",
        "state",
        "from",
        "until",
        "retired",
    ]);
    for d in delegations {
        table.add_row([
            d.publisher.clone(),
            d.vendor.clone(),
            d.key_id.clone(),
            d.state.to_owned(),
            d.added_at.clone().unwrap_or_default(),
            d.expires_at.clone().unwrap_or_default(),
            d.retired_at.clone().unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    table
}

pub async fn publishers(
    mut node: Node,
    command: &PublishersCommand,
    output: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let changed: Vec<v1::PublisherDelegation> = match command {
        PublishersCommand::List => {
            let response = node
                .admin
                .list_publishers(unary(v1::ListPublishersRequest {}))
                .await
                .map_err(|status| node.failed("Admin.ListPublishers", status))?
                .into_inner();
            let views: Vec<DelegationView> = response
                .delegations
                .iter()
                .map(DelegationView::new)
                .collect();
            match output {
                OutputFormat::Json => output::print_json(&views)?,
                OutputFormat::Table | OutputFormat::Dot if views.is_empty() => {
                    println!("no publisher is delegated (sitesyncctl publishers add CERTIFICATE)");
                }
                OutputFormat::Table | OutputFormat::Dot => {
                    output::print_table(&delegation_table(&views))?
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        PublishersCommand::Add(args) | PublishersCommand::Rotate(args) => {
            let certificate = std::fs::read(&args.certificate_file)
                .with_context(|| format!("cannot read {}", args.certificate_file.display()))?;
            let expires_at = args
                .expires
                .as_deref()
                .map(|date| crate::units::end_of_day(date, "--expires"))
                .transpose()?
                .map(|day| timestamp_to_wire(Timestamp(day.unix_timestamp() * 1000)));
            let response = node
                .admin
                .delegate_publisher(unary(v1::DelegatePublisherRequest {
                    certificate,
                    expires_at,
                    rotate: matches!(command, PublishersCommand::Rotate(_)),
                }))
                .await
                .map_err(|status| node.failed("Admin.DelegatePublisher", status))?
                .into_inner();
            response
                .delegation
                .into_iter()
                .chain(response.retired)
                .collect()
        }
        PublishersCommand::Revoke(args) => {
            let response = node
                .admin
                .revoke_publisher(unary(v1::RevokePublisherRequest {
                    publisher: args.name.clone(),
                }))
                .await
                .map_err(|status| node.failed("Admin.RevokePublisher", status))?
                .into_inner();
            response.retired
        }
    };
    let views: Vec<DelegationView> = changed.iter().map(DelegationView::new).collect();
    match output {
        OutputFormat::Json => output::print_json(&views)?,
        OutputFormat::Table | OutputFormat::Dot => {
            output::print_table(&delegation_table(&views))?;
            eprintln!(
                "the next catalog version the top site signs carries this to every site (sitesyncctl sync)"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

//! The command line: clap's derive types, and nothing that does work.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use sitesync_metadata::generate::CatalogSpec;

use crate::output::OutputFormat;

/// Where `--node` points when neither the flag nor `SITESYNC_NODE` is given: a node started
/// with its defaults on this machine.
pub const DEFAULT_NODE: &str = "http://127.0.0.1:8530";

/// Operate a sitesync hierarchy: software-update metadata kept in step from the top site
/// down to every child site.
#[derive(Debug, Parser)]
#[command(
    name = "sitesyncctl",
    version,
    propagate_version = true,
    after_help = "Exit status: 0 on success; 1 when the command failed (or the sync it waited \
                  for failed); 2 when the node could not be reached; 64 when the command line \
                  is not understood."
)]
pub struct Cli {
    /// How to print results on stdout: a table for people, or JSON for scripts.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    #[command(flatten)]
    pub node: NodeArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// How to reach a node: its address and the operator's certificate, set up in one place.
#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    /// The node to talk to: `host:port` or `http://host:port`.
    #[arg(
        long = "node",
        global = true,
        env = "SITESYNC_NODE",
        value_name = "ADDR",
        default_value = DEFAULT_NODE
    )]
    pub address: String,

    #[command(flatten)]
    pub tls: ClientTlsArgs,
}

/// The operator's certificate: sitesyncctl speaks mutual TLS to nodes unless told
/// `--insecure`. Without any of these flags it uses `./sitesync-data/pki`, where a top site
/// started on its defaults in this directory made its CA and the operator `admin`.
#[derive(Debug, Clone, Default, Args)]
pub struct ClientTlsArgs {
    /// A PKI directory made by `sitesyncctl pki` (or a top site's `<data dir>/pki`): its
    /// `ca.pem`, `crl.pem` and the operator's `operators/NAME.pem` and `.key`.
    #[arg(long, global = true, env = "SITESYNC_PKI_DIR", value_name = "DIR")]
    pub pki_dir: Option<PathBuf>,
    /// The operator whose certificate the PKI directory holds.
    #[arg(
        long,
        global = true,
        env = "SITESYNC_OPERATOR",
        value_name = "NAME",
        default_value = DEFAULT_OPERATOR
    )]
    pub operator: String,
    /// The CA certificate (PEM), instead of a PKI directory; with --certificate and --key.
    #[arg(long, global = true, env = "SITESYNC_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// The operator's certificate (PEM), instead of a PKI directory.
    #[arg(long, global = true, env = "SITESYNC_CERTIFICATE", value_name = "FILE")]
    pub certificate: Option<PathBuf>,
    /// The operator's private key (PEM), instead of a PKI directory.
    #[arg(long, global = true, env = "SITESYNC_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Plaintext, for a node started with --insecure.
    #[arg(long, global = true, env = "SITESYNC_INSECURE")]
    pub insecure: bool,
}

/// The operator `sitesyncctl pki init` issues and a self-provisioned top site makes.
pub const DEFAULT_OPERATOR: &str = "admin";

/// Where a top site started on its defaults keeps its self-made PKI (`<data dir>/pki`).
pub const DEFAULT_NODE_PKI_DIR: &str = "./sitesync-data/pki";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Work with update catalogs: directories of Microsoft update XML documents.
    #[command(subcommand)]
    Catalog(CatalogCommand),

    /// The node's state: both stores, the last and the current sync, the next scheduled
    /// sync, the client policy version.
    Status,

    /// Start a sync at the node (a top site): full, or with --manual new updates only.
    Sync(SyncArgs),

    /// Status messages (6701 started, 6702 done, 6703 failed, 6704/6705/6706 phases, ...).
    Messages(MessagesArgs),

    /// The updates a node's store holds.
    #[command(subcommand)]
    Updates(UpdatesCommand),

    /// The sync settings: products, classifications, languages, schedule, retry delay.
    #[command(subcommand)]
    Settings(SettingsCommand),

    /// The client policy the site serves (where clients scan, and which catalog to expect).
    Policy(PolicyArgs),

    /// The hierarchy seen from this site: each site's role, address, stores, last sync and
    /// lag, unreachable sites flagged. A tree for people; `--output json`; `--output dot`
    /// for Graphviz. With --watch, redrawn every few seconds until Ctrl-C.
    ///
    /// A site's lag is how far its site database is behind its parent's: the revisions it
    /// has still to apply and the time since it last matched. At a terminal, a site that is
    /// behind has its lag highlighted and an unreachable site its status.
    Tree(TreeArgs),

    /// Start a local hierarchy of real nodes on loopback (top site CEN; primary sites PR1
    /// and PR2 under it; SE1 under PR1; the internet-facing node IN1 of PR1), feed the top
    /// site a generated catalog, follow its scheduled sync and the cascade down the tree
    /// until every site holds the top site's catalog, print the tree, and stop the nodes.
    Demo(DemoArgs),

    /// The hierarchy's certificate authority on local files: create it, issue site and
    /// operator certificates, revoke them.
    #[command(subcommand)]
    Pki(PkiCommand),

    /// Write the node's update-server store to an export file (S12, `WSUSutil export`), for
    /// a server that cannot reach its upstream: the whole catalog, or with --since the
    /// changes after an earlier file. `export inspect FILE` reads a file without a node.
    Export(ExportArgs),

    /// Import an export file at the node (S12, `WSUSutil import`): the node verifies the
    /// whole file before it changes anything, then applies it as its sync.
    Import(ImportArgs),

    /// Publish a custom update at the top site (S6, as System Center Updates Publisher
    /// did): FILE is a short TOML or JSON description, or an update XML document. The
    /// publisher's key signs it here; the node checks it against the publisher's delegation
    /// and keeps it. `publish revise ID FILE` makes a new revision, `publish expire ID` the
    /// expired one — only the publisher's key is needed, not the original file.
    Publish(PublishArgs),

    /// The publishers the top site delegates vendors to (S6): list them, add one, rotate a
    /// publisher's key, revoke a publisher.
    #[command(subcommand)]
    Publishers(PublishersCommand),
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct PublishArgs {
    #[command(subcommand)]
    pub command: Option<PublishCommand>,

    /// The update: a TOML (`.toml`) or JSON (`.json`) description, or an update XML
    /// document (`.xml`).
    #[arg(value_name = "FILE", required = true)]
    pub file: Option<PathBuf>,

    /// For an update XML document: the product of the publisher's vendor it belongs to (a
    /// description names its own).
    #[arg(long, value_name = "PRODUCT")]
    pub product: Option<String>,

    #[command(flatten)]
    pub publisher: PublisherArgs,
}

#[derive(Debug, Subcommand)]
pub enum PublishCommand {
    /// A new revision of a published update, from a new description or document.
    Revise(PublishReviseArgs),
    /// The expired revision of a published update: it is withdrawn everywhere at the next
    /// full sync.
    Expire(PublishExpireArgs),
}

#[derive(Debug, Args)]
pub struct PublishReviseArgs {
    /// The published update's id.
    #[arg(value_name = "ID")]
    pub id: String,

    /// The new revision's description or document.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// For an update XML document: its vendor's product.
    #[arg(long, value_name = "PRODUCT")]
    pub product: Option<String>,

    #[command(flatten)]
    pub publisher: PublisherArgs,
}

#[derive(Debug, Args)]
pub struct PublishExpireArgs {
    /// The published update's id.
    #[arg(value_name = "ID")]
    pub id: String,

    #[command(flatten)]
    pub publisher: PublisherArgs,
}

/// The publisher's key: its certificate and key files, or its name in a PKI directory.
#[derive(Debug, Clone, Default, Args)]
pub struct PublisherArgs {
    /// The publisher's certificate (PEM), from `sitesyncctl pki issue publisher`.
    #[arg(
        long,
        env = "SITESYNC_PUBLISHER_CERT",
        value_name = "FILE",
        requires = "publisher_key",
        conflicts_with = "publisher"
    )]
    pub publisher_cert: Option<PathBuf>,
    /// The publisher's private key (PEM).
    #[arg(
        long,
        env = "SITESYNC_PUBLISHER_KEY",
        value_name = "FILE",
        requires = "publisher_cert"
    )]
    pub publisher_key: Option<PathBuf>,
    /// The publisher whose certificate and key the PKI directory (--pki-dir) holds under
    /// `publishers/`.
    #[arg(long, env = "SITESYNC_PUBLISHER", value_name = "NAME")]
    pub publisher: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum PublishersCommand {
    /// Every delegation, retired ones included: publisher, vendor, key, from, until.
    List,
    /// Delegate the vendor of a publisher certificate to its key.
    Add(PublishersAddArgs),
    /// Delegate a publisher's new certificate and retire its other keys at once (key
    /// rotation): revisions signed with the old key stay valid, new ones need the new key.
    Rotate(PublishersAddArgs),
    /// Retire every key of a publisher: its new revisions are refused, its accepted ones
    /// stay valid.
    Revoke(PublishersRevokeArgs),
}

#[derive(Debug, Args)]
pub struct PublishersAddArgs {
    /// The publisher's certificate (PEM).
    #[arg(value_name = "CERTIFICATE")]
    pub certificate_file: PathBuf,

    /// The last day of the delegation (UTC, `YYYY-MM-DD`); by default the certificate's.
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub expires: Option<String>,
}

#[derive(Debug, Args)]
pub struct PublishersRevokeArgs {
    /// The publisher's name.
    #[arg(value_name = "NAME")]
    pub name: String,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ExportArgs {
    #[command(subcommand)]
    pub command: Option<ExportCommand>,

    /// The export file to write. It is written under a temporary name beside it and gets
    /// its name only once it is complete.
    #[arg(long, value_name = "FILE", required = true)]
    pub out: Option<PathBuf>,

    /// Export only the changes after an earlier export file: the node starts where that
    /// file's target is.
    #[arg(long, value_name = "PREVIOUS_FILE", conflicts_with = "since_anchor")]
    pub since: Option<PathBuf>,

    /// Export only the changes after this position of the node's change log, as `export
    /// inspect` prints a file's target.
    #[arg(long, value_name = "LOG_ID:SEQUENCE", value_parser = crate::units::parse_anchor)]
    pub since_anchor: Option<sitesync_proto::v1::Anchor>,

    /// Replace FILE when it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// What an export file holds, read without a node; with --verify, its signature and
    /// every chunk checked (exit status 1 when it does not verify).
    Inspect(ExportInspectArgs),
}

#[derive(Debug, Args)]
pub struct ExportInspectArgs {
    /// The export file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Check the manifest's signature against the trusted CAs, then read every chunk.
    #[arg(long)]
    pub verify: bool,

    /// A CA certificate (PEM) to trust besides the hierarchy CA of the TLS flags
    /// (--pki-dir's ca.pem or --ca); repeat for several.
    #[arg(long, value_name = "CA_PEM", requires = "verify")]
    pub trust: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The export file. It is only read.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Have the node verify the file and say what it is, without changing anything.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct TreeArgs {
    /// Ask again every --interval and show each answer, until Ctrl-C (exit status 0).
    ///
    /// At a terminal the tree is redrawn in place under a header naming the node, the time of
    /// the last refresh and the interval. Piped, each refresh is printed after the last with
    /// a blank line between. With `--output json`, each is one JSON object on a line of its
    /// own: `node`, `refreshed_at`, `interval_seconds`, `answered`, `error`,
    /// `last_answer_at` and `tree` (what `tree --output json` prints). A node that cannot be
    /// reached does not end the watch: the refresh says so and why, and the next one tries
    /// again. A refusal that cannot pass (a certificate or permission refused) ends it with
    /// the usual error and exit status.
    #[arg(long)]
    pub watch: bool,

    /// How often --watch asks the node (`2s`, `10s`, `1m`).
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "2s",
        value_parser = crate::units::parse_interval,
        requires = "watch"
    )]
    pub interval: Duration,
}

/// Where a PKI directory is, for every `pki` command.
pub const DEFAULT_PKI_DIR: &str = "./sitesync-pki";

#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Create a new certificate authority (ca.pem, ca.key with mode 0600, an empty crl.pem).
    Init(PkiInitArgs),
    /// Issue a certificate and key for a site or an operator (replacing an earlier one:
    /// rotation).
    Issue(PkiIssueArgs),
    /// Revoke a certificate: it is added to crl.pem, which nodes reload.
    Revoke(PkiRevokeArgs),
}

#[derive(Debug, Args)]
pub struct PkiInitArgs {
    /// The PKI directory (created if missing).
    #[arg(long, env = "SITESYNC_PKI_DIR", default_value = DEFAULT_PKI_DIR)]
    pub dir: PathBuf,
    /// A name for the hierarchy, in the CA's subject.
    #[arg(long, default_value = "hierarchy")]
    pub name: String,
    /// Keep a CA the directory already holds and succeed, instead of refusing: for start-up
    /// steps that run on every start.
    #[arg(long)]
    pub if_missing: bool,
}

#[derive(Debug, Args)]
pub struct PkiIssueArgs {
    /// The PKI directory holding the CA.
    #[arg(long, env = "SITESYNC_PKI_DIR", default_value = DEFAULT_PKI_DIR, global = true)]
    pub dir: PathBuf,
    /// How many days the certificate is valid.
    #[arg(long, default_value_t = 365, global = true)]
    pub days: u32,
    #[command(subcommand)]
    pub kind: IssueKind,
}

#[derive(Debug, Subcommand)]
pub enum IssueKind {
    /// A site's node: serves and calls other nodes; its code goes in the certificate.
    Site {
        /// The site code (three letters or digits).
        code: String,
        /// Host names or IP addresses the node is reached at, besides localhost and the
        /// site code in lower case; repeat for several.
        #[arg(long)]
        host: Vec<String>,
    },
    /// An operator: calls nodes' Admin service.
    Operator {
        /// The operator's name (letters, digits, `.`, `_`, `-`).
        name: String,
    },
    /// A publisher of custom updates: signs updates for one vendor, and opens no connection.
    /// Issuing again for the same name rotates its key.
    Publisher {
        /// The publisher's name (letters, digits, `.`, `_`, `-`).
        name: String,
        /// The vendor it may publish for, as its updates name their company (never one of
        /// Microsoft's names).
        #[arg(long)]
        vendor: String,
        /// The last day the certificate is valid (UTC), as YYYY-MM-DD; otherwise `--days`.
        #[arg(long, value_name = "DATE")]
        expires: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct PkiRevokeArgs {
    /// The PKI directory holding the CA.
    #[arg(long, env = "SITESYNC_PKI_DIR", default_value = DEFAULT_PKI_DIR)]
    pub dir: PathBuf,
    /// The certificate file to revoke (PEM).
    pub certificate: PathBuf,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How many update documents (revisions) the generated catalog holds.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 2_000,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub updates: u32,

    /// The catalog's seed: the same seed and N always give the same catalog.
    #[arg(long, value_name = "S", default_value_t = CatalogSpec::DEFAULT_SEED)]
    pub seed: u64,

    /// The work directory (the catalog, and each node's data and log), kept afterwards; it
    /// must be new or empty. Without it a fresh temporary directory is used and removed
    /// at the end (kept when the demo fails, for the logs).
    #[arg(long, value_name = "PATH")]
    pub dir: Option<PathBuf>,

    /// Leave the nodes running at the end and print their addresses and how to stop them.
    #[arg(long)]
    pub keep: bool,

    /// Serve the catalog from a fake upstream WSUS server on loopback, speaking the
    /// server-to-server protocol ([MS-WSUSSS]) over HTTP, and have the top site sync from it
    /// (`--upstream-wsus`) instead of reading the directory. The server lives in this
    /// process, so not with --keep.
    #[arg(long, conflicts_with = "keep")]
    pub wsus: bool,

    /// The `sitesync-node` binary; by default the one next to this `sitesyncctl`, else
    /// the one on PATH.
    #[arg(long, value_name = "PATH")]
    pub node_binary: Option<PathBuf>,

    /// How long the top site's sync and the cascade may take, from the moment every node
    /// listens until every site holds the top site's catalog (`90s`, `5m`).
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "5m",
        value_parser = crate::units::parse_duration
    )]
    pub timeout: Duration,
}

#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Write a deterministic, realistic catalog of update documents into a directory.
    Generate(GenerateArgs),
    /// Parse update documents and print what they say.
    Inspect(InspectArgs),
    /// Build the legacy scan catalog at the catalog host now (S13) and print what it
    /// built; the node builds it by itself every refresh (7 days by default).
    BuildLegacy,
    /// The legacy scan catalog the node holds and serves: its build, counts, expiry, the
    /// next build (at the host) and the last error.
    LegacyStatus,
    /// Download the node's legacy scan catalog into a directory, as an offline client
    /// does: the index is checked (signature, not expired, not older than the one DIR
    /// holds) before any shard is fetched; only shards DIR lacks are fetched, an
    /// interrupted download resumes, and DIR's catalog is replaced only once all is there.
    Download(LegacyDownloadArgs),
    /// Check a downloaded legacy scan catalog offline: signature, expiry, that its build is
    /// not older than one DIR held before, and every shard's length and SHA-256.
    Verify(LegacyVerifyArgs),
}

#[derive(Debug, Args)]
pub struct LegacyDownloadArgs {
    /// The directory to keep the catalog in; created if missing.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// A CA certificate (PEM) the index's signer must chain to; repeat for several. The
    /// CA of --pki-dir (or --ca) is trusted too.
    #[arg(long, value_name = "CA_PEM")]
    pub trust: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct LegacyVerifyArgs {
    /// The catalog directory, as `catalog download` wrote it.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,

    /// A CA certificate (PEM) the index's signer must chain to; repeat for several. The
    /// CA of --pki-dir (or --ca) is trusted too.
    #[arg(long, value_name = "CA_PEM")]
    pub trust: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// How many documents (revisions) to write, category updates included.
    #[arg(long, value_name = "N")]
    pub updates: usize,

    /// The directory to write into; created if missing.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// The seed: the same seed and N always give the same bytes.
    #[arg(long, value_name = "S", default_value_t = CatalogSpec::DEFAULT_SEED)]
    pub seed: u64,

    /// Write into a directory that is not empty: catalog documents already in it
    /// (`<update id>-r<revision>.xml`) are removed first, other files are left alone.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Update documents to inspect; a directory stands for every `*.xml` file in it.
    #[arg(value_name = "FILE", required = true)]
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Sync only updates that are new since the last sync (ConfigMgr's "Run
    /// Synchronization"); without it the sync is full, as a scheduled one.
    #[arg(long)]
    pub manual: bool,

    /// Follow the sync until it finishes, with its progress on stderr; exit 1 if it fails.
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Args)]
pub struct MessagesArgs {
    /// Only messages raised by this site; repeat or separate with commas for several.
    #[arg(long = "site", value_name = "CODE", value_delimiter = ',')]
    pub sites: Vec<String>,

    /// Only these message ids (6701 started, 6702 done, 6703 failed, 6704, 6705, 6706
    /// phases, 6790 document skipped, 6791-6795 legacy scan catalog); repeat or separate
    /// with commas.
    #[arg(long = "id", value_name = "ID", value_delimiter = ',')]
    pub ids: Vec<u32>,

    /// Only messages raised at or after this time: RFC 3339 (`2025-01-31T08:00:00Z`) or a
    /// duration ago (`90m`, `1h`, `7d`).
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,

    /// Only messages raised before this time (same forms as --since).
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,

    /// Only messages of this sync run.
    #[arg(long, value_name = "ID")]
    pub sync_id: Option<String>,

    /// Only messages of this severity or worse.
    #[arg(long, value_enum, value_name = "LEVEL")]
    pub severity: Option<SeverityArg>,

    /// Oldest first instead of newest first.
    #[arg(long)]
    pub oldest_first: bool,

    /// At most this many messages; 0 for all.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub limit: usize,
}

/// A status message severity on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SeverityArg {
    Informational,
    Warning,
    Error,
}

/// Which of a node's two stores to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreArg {
    /// The update-server store (the WSUS database).
    UpdateServer,
    /// The site database (the ConfigMgr database).
    SiteDatabase,
    /// The custom updates published at a top site (S6), selected or not.
    Publications,
}

#[derive(Debug, Subcommand)]
pub enum UpdatesCommand {
    /// The latest revision of each update matching the filters.
    List(UpdatesListArgs),
    /// One update in full: titles, KB, severity, categories, relationships, files,
    /// revisions held.
    Show(UpdatesShowArgs),
}

#[derive(Debug, Args)]
pub struct UpdatesListArgs {
    /// In this product (name or category id); repeat or separate with commas for any of
    /// several.
    #[arg(long = "product", value_name = "PRODUCT", value_delimiter = ',')]
    pub products: Vec<String>,

    /// In this classification (name such as `Security Updates`, or category id); repeat or
    /// separate with commas for any of several.
    #[arg(
        long = "classification",
        value_name = "CLASSIFICATION",
        value_delimiter = ','
    )]
    pub classifications: Vec<String>,

    /// With this KB article number (`890830` or `KB890830`).
    #[arg(long, value_name = "N")]
    pub kb: Option<String>,

    /// Whose title or description contains this text (case-insensitive).
    #[arg(long, value_name = "TEXT")]
    pub text: Option<String>,

    /// Only updates another held update supersedes.
    #[arg(long)]
    pub superseded: bool,

    /// Only expired updates.
    #[arg(long)]
    pub expired: bool,

    /// Only updates of this type; repeat or separate with commas.
    #[arg(long = "type", value_enum, value_name = "TYPE", value_delimiter = ',')]
    pub types: Vec<UpdateTypeArg>,

    /// Only updates of this MSRC severity or worse.
    #[arg(long, value_enum, value_name = "SEVERITY")]
    pub min_severity: Option<MsrcSeverityArg>,

    /// Only custom updates this publisher published (S6), by name.
    #[arg(long, value_name = "NAME")]
    pub publisher: Option<String>,

    /// Which store to read; by default the site database (the update-server store at an
    /// internet-facing node).
    #[arg(long, value_enum)]
    pub store: Option<StoreArg>,

    /// At most this many updates; 0 for all.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub limit: usize,
}

/// An update type on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UpdateTypeArg {
    Software,
    Driver,
    Category,
    Detectoid,
}

/// An MSRC severity on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MsrcSeverityArg {
    Low,
    Moderate,
    Important,
    Critical,
}

#[derive(Debug, Args)]
pub struct UpdatesShowArgs {
    /// The update id (a GUID).
    #[arg(value_name = "ID")]
    pub id: String,

    /// This revision instead of the latest.
    #[arg(long, value_name = "N")]
    pub revision: Option<u32>,

    /// Which store to read; by default the site database (the update-server store at an
    /// internet-facing node).
    #[arg(long, value_enum)]
    pub store: Option<StoreArg>,

    /// Print the original update XML document, byte for byte, instead of the details.
    #[arg(long)]
    pub document: bool,
}

#[derive(Debug, Subcommand)]
pub enum SettingsCommand {
    /// Print the sync settings.
    Get,
    /// Change the sync settings: only the settings given change, the rest are kept. A
    /// change of products, classifications or languages makes the next sync full.
    Set(SettingsSetArgs),
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("change").required(true).multiple(true))]
pub struct SettingsSetArgs {
    /// Products to sync, by name or category id, comma-separated (replaces the list; `""`
    /// for none). Include `Local publisher` for locally published updates.
    #[arg(long, value_name = "A,B", group = "change")]
    pub products: Option<String>,

    /// Classifications to sync, by name or category id, comma-separated (replaces the
    /// list; `""` for none).
    #[arg(long, value_name = "A,B", group = "change")]
    pub classifications: Option<String>,

    /// Language tags whose titles and descriptions to keep, comma-separated (`en,de`;
    /// `""` for all).
    #[arg(long, value_name = "en,de", group = "change")]
    pub languages: Option<String>,

    /// When scheduled syncs run: an interval (`90m`, `12h`, `7d`, `2w`), a five-field cron
    /// expression in UTC (`"0 3 * * 0"` or `cron:0 3 * * 0`), or `manual` for none.
    #[arg(long, value_name = "SCHEDULE", group = "change")]
    pub schedule: Option<String>,

    /// How long after a failed sync to retry it (`60m`, `2h`).
    #[arg(long, value_name = "DURATION", group = "change")]
    pub retry: Option<String>,

    /// How often to refresh the legacy scan catalog (`7d`).
    #[arg(long, value_name = "DURATION", group = "change")]
    pub legacy_catalog_refresh: Option<String>,
}

#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// Read the policy as clients do, from the `ClientPolicy` service, instead of through
    /// the operator's `Admin` service.
    #[arg(long)]
    pub as_client: bool,
}

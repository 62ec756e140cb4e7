//! The node's configuration: embedded defaults, then a TOML file, then environment
//! variables, then command-line flags, each layer overriding the one before. Everything is
//! validated at load, and a bad value is reported with the key that holds it and why.
//!
//! With nothing configured a node runs the top site `CEN` with its data under
//! `./sitesync-data` and the bundled sample catalog as its upstream, so it works on a fresh
//! machine.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use sitesync_security::TlsFiles;

use crate::sync::schedule::{RetryPolicy, Schedule};
use crate::sync::settings::{CategorySelector, SyncSettings};
use crate::upstream::wsus::{ProxySetting, WsusSettings};

/// A site code: three letters or digits, as in ConfigMgr (`CEN`, `PR1`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SiteCode(String);

impl SiteCode {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SiteCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for SiteCode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.len() == 3 && s.bytes().all(|b| b.is_ascii_alphanumeric()) {
            Ok(Self(s.to_ascii_uppercase()))
        } else {
            Err(format!(
                "`{s}` is not a site code: use three letters or digits, such as CEN or PR1"
            ))
        }
    }
}

/// What a node is (SPEC Part 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A site's active update point and its site database.
    Site,
    /// An internet-facing update point: an update-server store only, fed by its own site.
    Internet,
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "site" => Ok(Self::Site),
            "internet" => Ok(Self::Internet),
            _ => Err(format!("`{s}` is not a role: use `site` or `internet`")),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Site => "site",
            Self::Internet => "internet",
        })
    }
}

/// Where the node's update server syncs from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamConfig {
    /// The sample catalog built into the binary, written under the data directory at start.
    Sample,
    /// A directory of update XML documents, one file per revision.
    Directory(PathBuf),
    /// The parent site's node (`host:port`): this node is a child site (S1, S5).
    Parent(String),
    /// Export files imported by an operator (S12): a node that cannot reach its upstream.
    /// Each import is its sync.
    Import,
    /// Microsoft Update or an existing WSUS server, over [MS-WSUSSS] (S1): a top site.
    Wsus(Box<WsusSettings>),
}

/// The validated configuration of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    pub site_code: SiteCode,
    pub role: Role,
    /// Where the node's database (and the materialized sample catalog) live.
    pub data_dir: PathBuf,
    /// The address the gRPC server binds; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Where other nodes reach this one (`host:port`), when that is not `listen`: a node
    /// listening on every interface in a container or behind a load balancer. A child
    /// registers it with its parent, which calls it there.
    pub advertise: Option<String>,
    /// The site codes allowed to register as children (sites and internet-facing nodes);
    /// `None` lets any site holding a certificate of the hierarchy's CA register.
    pub children: Option<Vec<SiteCode>>,
    pub upstream: UpstreamConfig,
    /// The storage engine's page cache.
    pub cache_bytes: u64,
    /// The sync settings as configured; the node keeps its own copy after first start,
    /// which operators change through `sitesyncctl settings set`.
    pub sync: SyncSection,
    /// How connections are secured (SPEC invariant 6).
    pub security: SecurityConfig,
    /// Where `/metrics` is served in plaintext for Prometheus; `None` (the default) serves
    /// no metrics.
    pub metrics_listen: Option<SocketAddr>,
    /// CA certificates (PEM files) of other hierarchies whose export files this node
    /// imports, besides its own hierarchy's (`[import] trust`).
    pub import_trust: Vec<PathBuf>,
    /// The legacy scan catalog (S13): whether this site builds it, and how.
    pub legacy_catalog: LegacyCatalogConfig,
}

/// How often the host builds the catalog unless configured otherwise (S13).
pub const DEFAULT_LEGACY_REFRESH: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// How often a site asks its parent for a newer build unless configured otherwise.
pub const DEFAULT_LEGACY_POLL: Duration = Duration::from_secs(10 * 60);

/// The classifications the catalog holds unless configured otherwise: those of
/// Microsoft's `wsusscn2.cab`.
pub const DEFAULT_LEGACY_CLASSIFICATIONS: [&str; 3] =
    ["Security Updates", "Update Rollups", "Service Packs"];

/// `[legacy_catalog]`, validated: the whole-catalog file older clients scan offline (S13).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyCatalogConfig {
    /// This site builds the catalog (the top site: the index is signed with its catalog
    /// key). Every other site fetches it from its parent.
    pub host: bool,
    /// How often the host builds it, unless `sitesyncctl settings set
    /// --legacy-catalog-refresh` changed it since.
    pub refresh: Duration,
    /// The update classifications it holds, by name or id.
    pub classifications: Vec<String>,
    /// How often a site asks its parent whether a newer build is there.
    pub poll: Duration,
    /// Updates per shard, on average: smaller shards mean less to download again after a
    /// change, and more files.
    pub shard_updates: u16,
}

impl Default for LegacyCatalogConfig {
    fn default() -> Self {
        Self {
            host: false,
            refresh: DEFAULT_LEGACY_REFRESH,
            classifications: DEFAULT_LEGACY_CLASSIFICATIONS
                .iter()
                .map(|c| (*c).to_owned())
                .collect(),
            poll: DEFAULT_LEGACY_POLL,
            shard_updates: 64,
        }
    }
}

/// `[legacy_catalog]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLegacyCatalog {
    #[serde(default)]
    host: bool,
    refresh: Option<String>,
    classifications: Option<Vec<String>>,
    poll: Option<String>,
    shard_updates: Option<u16>,
}

/// A duration for `[legacy_catalog]`: a whole number and a unit (`s`, `m`, `h`, `d`, `w`).
fn legacy_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` has no unit (s, m, h, d or w)"))?;
    let (number, unit) = text.split_at(digits_end);
    let count: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` does not start with a whole number"))?;
    let seconds = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        other => return Err(format!("unknown unit `{other}` (use s, m, h, d or w)")),
    };
    if count == 0 {
        return Err("it must be longer than zero".into());
    }
    count
        .checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("`{text}` is too long"))
}

/// How a node secures its connections: mutual TLS unless an operator explicitly says not to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecurityConfig {
    /// Mutual TLS with certificates from the hierarchy's CA.
    Tls {
        files: TlsFiles,
        /// Whether clients need a certificate to read the client policy (S8).
        client_policy_needs_certificate: bool,
    },
    /// Mutual TLS with a CA the node creates for itself under `<data_dir>/pki` on first
    /// start: what a top site started with no certificates uses, so that even a node on
    /// its defaults is secure. Operators then use `sitesyncctl --pki-dir <data_dir>/pki`.
    SelfProvisioned {
        client_policy_needs_certificate: bool,
    },
    /// Plaintext, only with `insecure = true` or `--insecure`; logged as a warning at start.
    Insecure,
}

/// `[tls]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTls {
    /// A directory laid out by `sitesyncctl pki`: `ca.pem`, `crl.pem`,
    /// `sites/<site code>.pem` and `.key`.
    pki_dir: Option<PathBuf>,
    ca: Option<PathBuf>,
    certificate: Option<PathBuf>,
    key: Option<PathBuf>,
    crl: Option<PathBuf>,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    client_policy_needs_certificate: bool,
}

/// `[sync]`: what to sync and when, as written (validated at load). These are the settings
/// a node starts with; afterwards operators change them with `sitesyncctl settings set`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncSection {
    /// Products to sync, by name or category id; empty means every product.
    #[serde(default)]
    pub products: Vec<String>,
    /// Update classifications to sync, by name or category id; empty means all.
    #[serde(default)]
    pub classifications: Vec<String>,
    /// Languages to sync (`en`, `de`, ...); empty means all.
    #[serde(default)]
    pub languages: Vec<String>,
    /// Scheduled syncs: an interval (`7d`, `12h`, `2w`) or a cron expression.
    pub schedule: Option<String>,
    /// The delay before a failed sync is retried (`60m`).
    pub retry: Option<String>,
}

/// A configuration error, naming the key and what is wrong with its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("config file {path}: {reason}")]
    Syntax { path: PathBuf, reason: String },
    #[error("{key} (from {origin}): {reason}")]
    Invalid {
        key: &'static str,
        origin: Source,
        reason: String,
    },
}

/// Which layer a value came from, so an error says where to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    Overrides,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("the defaults"),
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Overrides => f.write_str("the environment or command line"),
        }
    }
}

/// The config file's shape. Every field is optional: absent means "keep the default".
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    site_code: Option<String>,
    role: Option<String>,
    data_dir: Option<PathBuf>,
    listen: Option<String>,
    advertise: Option<String>,
    children: Option<Vec<String>>,
    cache_mib: Option<u64>,
    upstream: Option<FileUpstream>,
    sync: Option<SyncSection>,
    tls: Option<FileTls>,
    metrics: Option<FileMetrics>,
    import: Option<FileImport>,
    legacy_catalog: Option<FileLegacyCatalog>,
}

/// `[import]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileImport {
    /// CA certificates (PEM) of other hierarchies whose export files are imported.
    #[serde(default)]
    trust: Vec<PathBuf>,
}

/// `[metrics]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMetrics {
    /// Where `/metrics` is served (`host:port`); absent, no metrics are served.
    listen: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileUpstream {
    /// `sample`, `directory`, `parent`, `import` or `wsus`.
    kind: String,
    path: Option<PathBuf>,
    /// The parent's address, for `parent`.
    address: Option<String>,
    /// The upstream server's root, for `wsus`; absent: Microsoft Update.
    url: Option<String>,
    /// A PEM file of the CAs to trust for an `https` server instead of the system's roots.
    ca_file: Option<PathBuf>,
    /// `http://[user:password@]host:port`, or `none` to ignore `HTTPS_PROXY`/`HTTP_PROXY`.
    proxy: Option<String>,
    /// Sent in GetCookie (`1.20` by default).
    protocol_version: Option<String>,
    /// GetAuthorizationCookie's `accountName`: this server's DNS name.
    account_name: Option<String>,
    connect_timeout_secs: Option<u64>,
    request_timeout_secs: Option<u64>,
    /// Tries of one request after the first, when the server is busy or unreachable.
    retries: Option<u32>,
}

impl FileUpstream {
    fn resolve(self, origin: Source) -> Result<UpstreamConfig, ConfigError> {
        let invalid = |key: &'static str, reason: String| ConfigError::Invalid {
            key,
            origin: origin.clone(),
            reason,
        };
        // The keys present besides `kind`, each allowed by one kind only.
        let present: Vec<(&'static str, &'static str)> = [
            ("path", "directory", self.path.is_some()),
            ("address", "parent", self.address.is_some()),
            ("url", "wsus", self.url.is_some()),
            ("ca_file", "wsus", self.ca_file.is_some()),
            ("proxy", "wsus", self.proxy.is_some()),
            ("protocol_version", "wsus", self.protocol_version.is_some()),
            ("account_name", "wsus", self.account_name.is_some()),
            (
                "connect_timeout_secs",
                "wsus",
                self.connect_timeout_secs.is_some(),
            ),
            (
                "request_timeout_secs",
                "wsus",
                self.request_timeout_secs.is_some(),
            ),
            ("retries", "wsus", self.retries.is_some()),
        ]
        .into_iter()
        .filter(|&(_, _, given)| given)
        .map(|(key, kind, _)| (key, kind))
        .collect();
        let kind = self.kind.as_str();
        if !matches!(kind, "sample" | "directory" | "parent" | "import" | "wsus") {
            return Err(invalid(
                "upstream.kind",
                format!(
                    "`{kind}` is not an upstream kind: use `sample`, `directory`, `parent`, `import` or `wsus`"
                ),
            ));
        }
        if let Some((key, owner)) = present.iter().find(|(_, owner)| *owner != kind) {
            return Err(invalid(
                "upstream",
                format!("kind `{kind}` takes no `{key}` (that belongs to kind `{owner}`)"),
            ));
        }
        match kind {
            "sample" => Ok(UpstreamConfig::Sample),
            "import" => Ok(UpstreamConfig::Import),
            "directory" => match self.path {
                Some(path) => Ok(UpstreamConfig::Directory(path)),
                None => Err(invalid(
                    "upstream.path",
                    "a directory upstream needs `path`, the directory of update documents".into(),
                )),
            },
            "parent" => match self.address {
                Some(address) => Ok(UpstreamConfig::Parent(check_address(
                    &address,
                    origin.clone(),
                )?)),
                None => Err(invalid(
                    "upstream.address",
                    "a parent upstream needs `address`, the parent site's node as host:port".into(),
                )),
            },
            _ => {
                let mut settings = WsusSettings::default();
                if let Some(url) = &self.url {
                    settings.server = wsus_server(url, origin.clone())?;
                }
                settings.ca_file = self.ca_file;
                if let Some(proxy) = self.proxy {
                    settings.proxy = match proxy.trim() {
                        "none" | "direct" => ProxySetting::Direct,
                        url if url.starts_with("http://") || url.starts_with("https://") => {
                            ProxySetting::Url(url.to_owned())
                        }
                        _ => {
                            return Err(invalid(
                                "upstream.proxy",
                                "use a proxy URL (`http://proxy.example:3128`, credentials as `http://user:password@proxy.example:3128`) or `none` to ignore HTTPS_PROXY and HTTP_PROXY".into(),
                            ));
                        }
                    };
                }
                if let Some(version) = &self.protocol_version {
                    settings.protocol_version = sitesync_wsus::ProtocolVersion::parse(version)
                        .map_err(|e| invalid("upstream.protocol_version", e.to_string()))?;
                }
                if let Some(name) = self.account_name {
                    settings.account_name = name;
                }
                let seconds = |key: &'static str, value: Option<u64>, default: Duration| match value
                {
                    None => Ok(default),
                    Some(s) if (1..=3600).contains(&s) => Ok(Duration::from_secs(s)),
                    Some(s) => Err(invalid(
                        key,
                        format!("{s} is out of range: use 1 to 3600 (seconds)"),
                    )),
                };
                settings.connect_timeout = seconds(
                    "upstream.connect_timeout_secs",
                    self.connect_timeout_secs,
                    settings.connect_timeout,
                )?;
                settings.request_timeout = seconds(
                    "upstream.request_timeout_secs",
                    self.request_timeout_secs,
                    settings.request_timeout,
                )?;
                match self.retries {
                    Some(retries) if retries <= 20 => settings.retry.attempts = retries + 1,
                    Some(retries) => {
                        return Err(invalid(
                            "upstream.retries",
                            format!("{retries} is out of range: use 0 to 20"),
                        ));
                    }
                    None => {}
                }
                Ok(UpstreamConfig::Wsus(Box::new(settings)))
            }
        }
    }
}

/// An upstream server's root URL, checked.
fn wsus_server(url: &str, origin: Source) -> Result<sitesync_wsus::ServerRoot, ConfigError> {
    sitesync_wsus::ServerRoot::parse(url.trim()).map_err(|e| ConfigError::Invalid {
        key: "upstream.url",
        origin,
        reason: format!(
            "{e}: Microsoft Update is https://sws.update.microsoft.com, a WSUS http://host:8530 or https://host:8531"
        ),
    })
}

/// A parent's address as `host:port`, with or without `http://`.
fn check_address(address: &str, origin: Source) -> Result<String, ConfigError> {
    let bare = address.trim().trim_start_matches("http://");
    let valid = bare
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if valid {
        Ok(bare.to_owned())
    } else {
        Err(ConfigError::Invalid {
            key: "upstream.address",
            origin,
            reason: format!(
                "`{address}` is not an address: use host:port, such as pr1.example.org:8530"
            ),
        })
    }
}

/// Values given on the command line or in the environment; they win over the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub site_code: Option<String>,
    pub role: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    /// Where other nodes reach this one, when not at `listen`.
    pub advertise: Option<String>,
    /// The site codes that may register as children.
    pub children: Option<Vec<String>>,
    pub upstream_dir: Option<PathBuf>,
    /// The parent site's node (`host:port`): makes this node a child site.
    pub parent: Option<String>,
    /// An upstream kind given by name (`import`; the others have flags of their own).
    pub upstream_kind: Option<String>,
    /// The root URL of Microsoft Update or a WSUS server: makes this node a top site over
    /// [MS-WSUSSS]. Other `[upstream]` keys of kind `wsus` in the file still apply.
    pub upstream_wsus: Option<String>,
    pub cache_mib: Option<u64>,
    /// A PKI directory made by `sitesyncctl pki` (wins over `[tls]` files).
    pub pki_dir: Option<PathBuf>,
    /// Plaintext connections: for a lab only.
    pub insecure: bool,
    /// Where `/metrics` is served (`host:port`).
    pub metrics_listen: Option<String>,
}

pub const DEFAULT_SITE_CODE: &str = "CEN";
pub const DEFAULT_DATA_DIR: &str = "./sitesync-data";
/// WSUS's own port, on loopback: a node is reachable from elsewhere only when configured so.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8530";
pub const DEFAULT_CACHE_MIB: u64 = 32;

impl NodeConfig {
    /// Loads the layers: defaults, then `file` if given, then `overrides`.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let (parsed, file_source) = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
                    path: path.to_owned(),
                    reason: e.to_string(),
                })?;
                let parsed: FileConfig =
                    toml::from_str(&text).map_err(|e| ConfigError::Syntax {
                        path: path.to_owned(),
                        reason: e.to_string(),
                    })?;
                (parsed, Source::File(path.to_owned()))
            }
            None => (FileConfig::default(), Source::Default),
        };
        let pick = |flag: Option<String>, file: Option<String>, default: &str| match (flag, file) {
            (Some(v), _) => (v, Source::Overrides),
            (None, Some(v)) => (v, file_source.clone()),
            (None, None) => (default.to_owned(), Source::Default),
        };

        let (site_code, source) = pick(
            overrides.site_code.clone(),
            parsed.site_code,
            DEFAULT_SITE_CODE,
        );
        let site_code = site_code.parse().map_err(|reason| ConfigError::Invalid {
            key: "site_code",
            origin: source,
            reason,
        })?;

        let (role, role_source) = pick(overrides.role.clone(), parsed.role, "site");
        let role: Role = role.parse().map_err(|reason| ConfigError::Invalid {
            key: "role",
            origin: role_source.clone(),
            reason,
        })?;

        let (listen, source) = pick(overrides.listen.clone(), parsed.listen, DEFAULT_LISTEN);
        let listen = listen.parse().map_err(|_| ConfigError::Invalid {
            key: "listen",
            origin: source,
            reason: format!("`{listen}` is not an address: use host:port, such as 127.0.0.1:8530 or 0.0.0.0:8530"),
        })?;

        let children = match (overrides.children.clone(), parsed.children) {
            (Some(v), _) => Some((v, Source::Overrides)),
            (None, Some(v)) => Some((v, file_source.clone())),
            (None, None) => None,
        };
        let children = children
            .map(|(codes, origin)| {
                codes
                    .iter()
                    .map(|code| code.trim().parse::<SiteCode>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|reason| ConfigError::Invalid {
                        key: "children",
                        origin,
                        reason,
                    })
            })
            .transpose()?;

        let advertise = match (overrides.advertise.clone(), parsed.advertise) {
            (Some(v), _) => Some((v, Source::Overrides)),
            (None, Some(v)) => Some((v, file_source.clone())),
            (None, None) => None,
        };
        let advertise = advertise
            .map(|(address, origin)| {
                validate_address(&address).map_err(|reason| ConfigError::Invalid {
                    key: "advertise",
                    origin,
                    reason,
                })
            })
            .transpose()?;

        let metrics_listen = match (
            overrides.metrics_listen.clone(),
            parsed.metrics.and_then(|m| m.listen),
        ) {
            (Some(v), _) => Some((v, Source::Overrides)),
            (None, Some(v)) => Some((v, file_source.clone())),
            (None, None) => None,
        };
        let metrics_listen = metrics_listen
            .map(|(address, origin)| check_metrics_listen(&address, listen, origin))
            .transpose()?;

        let data_dir = overrides
            .data_dir
            .clone()
            .or(parsed.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));

        let cache_mib = overrides
            .cache_mib
            .or(parsed.cache_mib)
            .unwrap_or(DEFAULT_CACHE_MIB);
        if !(8..=16_384).contains(&cache_mib) {
            return Err(ConfigError::Invalid {
                key: "cache_mib",
                origin: if overrides.cache_mib.is_some() {
                    Source::Overrides
                } else {
                    file_source.clone()
                },
                reason: format!("{cache_mib} is out of range: use 8 to 16384 (MiB)"),
            });
        }

        let flags = [
            overrides.upstream_dir.is_some(),
            overrides.parent.is_some(),
            overrides.upstream_wsus.is_some(),
        ];
        let upstream_source = match &parsed.upstream {
            _ if overrides.upstream_kind.is_some() || flags.contains(&true) => Source::Overrides,
            Some(_) => file_source.clone(),
            None => Source::Default,
        };
        if flags.iter().filter(|&&given| given).count() > 1 {
            return Err(ConfigError::Invalid {
                key: "upstream",
                origin: Source::Overrides,
                reason: "more than one upstream is given (of --upstream-dir, --parent and --upstream-wsus): a top site syncs from a directory or a WSUS server, a child site from its parent; give one".into(),
            });
        }
        let upstream = match (
            &overrides.upstream_dir,
            &overrides.parent,
            &overrides.upstream_wsus,
            parsed.upstream,
        ) {
            _ if overrides.upstream_kind.is_some() => upstream_kind(overrides)?,
            (Some(dir), _, _, _) => UpstreamConfig::Directory(dir.clone()),
            (_, Some(parent), _, _) => {
                UpstreamConfig::Parent(check_address(parent, Source::Overrides)?)
            }
            (_, _, Some(url), file) => {
                // The flag names the server; the file's other `wsus` keys still apply.
                let mut settings = match file.map(|f| f.resolve(file_source.clone())).transpose()? {
                    Some(UpstreamConfig::Wsus(settings)) => settings,
                    _ => Box::default(),
                };
                settings.server = wsus_server(url, Source::Overrides)?;
                UpstreamConfig::Wsus(settings)
            }
            (None, None, None, None) => UpstreamConfig::Sample,
            (None, None, None, Some(file)) => file.resolve(file_source.clone())?,
        };
        // S11: an internet-facing node syncs from its own site's node, never from a catalog;
        // one that cannot reach it imports its site's export files instead (S12).
        if role == Role::Internet
            && !matches!(upstream, UpstreamConfig::Parent(_) | UpstreamConfig::Import)
        {
            return Err(ConfigError::Invalid {
                key: "upstream.kind",
                origin: upstream_source,
                reason: format!(
                    "role = \"internet\" (from {role_source}) syncs only from its own site's node: set upstream.kind = \"parent\" with upstream.address = the site node's host:port, or pass --parent (or, with no path to it, upstream.kind = \"import\")"
                ),
            });
        }

        let sync = parsed.sync.unwrap_or_default();
        sync.settings()
            .map_err(|(key, reason)| ConfigError::Invalid {
                key,
                origin: file_source.clone(),
                reason,
            })?;

        let security = security(
            overrides,
            parsed.tls.unwrap_or_default(),
            &file_source,
            &site_code,
            &upstream,
        )?;
        let import_trust = parsed.import.map(|i| i.trust).unwrap_or_default();
        for path in &import_trust {
            read_trusted_cas(path).map_err(|reason| ConfigError::Invalid {
                key: "import.trust",
                origin: file_source.clone(),
                reason,
            })?;
        }
        if !import_trust.is_empty() && upstream != UpstreamConfig::Import {
            return Err(ConfigError::Invalid {
                key: "import.trust",
                origin: file_source.clone(),
                reason: "trusted CAs for imports are given, but the upstream is not `import`: set upstream.kind = \"import\" or drop [import]".into(),
            });
        }
        if upstream == UpstreamConfig::Import && security == SecurityConfig::Insecure {
            return Err(ConfigError::Invalid {
                key: "upstream.kind",
                origin: upstream_source,
                reason: "an import upstream verifies the signatures of export files, which needs the hierarchy's certificates: drop `insecure` and give --pki-dir (or [tls])".into(),
            });
        }

        let legacy = parsed.legacy_catalog.unwrap_or_default();
        let invalid = |key: &'static str, reason: String| ConfigError::Invalid {
            key,
            origin: file_source.clone(),
            reason,
        };
        let mut legacy_catalog = LegacyCatalogConfig {
            host: legacy.host,
            ..LegacyCatalogConfig::default()
        };
        if let Some(refresh) = &legacy.refresh {
            legacy_catalog.refresh =
                legacy_duration(refresh).map_err(|e| invalid("legacy_catalog.refresh", e))?;
        }
        if let Some(poll) = &legacy.poll {
            legacy_catalog.poll =
                legacy_duration(poll).map_err(|e| invalid("legacy_catalog.poll", e))?;
        }
        if let Some(updates) = legacy.shard_updates {
            if updates == 0 {
                return Err(invalid(
                    "legacy_catalog.shard_updates",
                    "give the updates a shard holds on average, at least 1 (64 by default)".into(),
                ));
            }
            legacy_catalog.shard_updates = updates;
        }
        if let Some(classifications) = legacy.classifications {
            if classifications.iter().any(|c| c.trim().is_empty()) {
                return Err(invalid(
                    "legacy_catalog.classifications",
                    "an empty name: give update classifications by name (`Security Updates`) or id"
                        .into(),
                ));
            }
            if classifications.is_empty() {
                return Err(invalid(
                    "legacy_catalog.classifications",
                    "an empty list would build an empty catalog: name at least one classification, or drop the key for the default".into(),
                ));
            }
            legacy_catalog.classifications = classifications;
        }
        if legacy_catalog.host {
            let top = role == Role::Site
                && !matches!(upstream, UpstreamConfig::Parent(_) | UpstreamConfig::Import);
            if !top || security == SecurityConfig::Insecure {
                return Err(invalid(
                    "legacy_catalog.host",
                    "only the top site can host the legacy scan catalog (its index is signed with the top site's catalog key, which needs TLS); every other site fetches it from its parent: drop `host` here".into(),
                ));
            }
        }

        Ok(Self {
            legacy_catalog,
            site_code,
            role,
            data_dir,
            listen,
            advertise,
            children,
            upstream,
            cache_bytes: cache_mib << 20,
            sync,
            security,
            metrics_listen,
            import_trust,
        })
    }
}

/// The CA certificates (DER) in the PEM file `path`, for `[import] trust`.
pub fn read_trusted_cas(
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject as _;
    let certificates = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read the CA certificate {}: {e}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!(
            "{} holds no certificate: give the other hierarchy's `ca.pem`",
            path.display()
        ));
    }
    Ok(certificates)
}

/// The upstream named by `--upstream KIND`, which must not contradict the other flags.
fn upstream_kind(overrides: &Overrides) -> Result<UpstreamConfig, ConfigError> {
    let kind = overrides.upstream_kind.as_deref().unwrap_or_default();
    let invalid = |reason: String| ConfigError::Invalid {
        key: "upstream.kind",
        origin: Source::Overrides,
        reason,
    };
    let only_kind = overrides.upstream_dir.is_none()
        && overrides.parent.is_none()
        && overrides.upstream_wsus.is_none();
    match kind.trim().to_ascii_lowercase().as_str() {
        "import" if only_kind => {
            Ok(UpstreamConfig::Import)
        }
        "import" => Err(invalid(
            "--upstream import takes no --upstream-dir, --parent or --upstream-wsus: export files are its only source".into(),
        )),
        "sample" if only_kind => {
            Ok(UpstreamConfig::Sample)
        }
        // Microsoft Update, or the server --upstream-wsus names.
        "wsus" if overrides.upstream_dir.is_none() && overrides.parent.is_none() => {
            let mut settings = Box::<WsusSettings>::default();
            if let Some(url) = &overrides.upstream_wsus {
                settings.server = wsus_server(url, Source::Overrides)?;
            }
            Ok(UpstreamConfig::Wsus(settings))
        }
        "directory" | "parent" => Err(invalid(format!(
            "use --upstream-dir DIR for a directory upstream and --parent HOST:PORT for a parent; --upstream names `import`, `sample` or `wsus`, not `{kind}`"
        ))),
        other => Err(invalid(format!(
            "`{other}` is not an upstream kind: use `import`, `sample` or `wsus` here, --upstream-dir or --parent for the others"
        ))),
    }
}

/// The metrics listener's address: a socket address, not the gRPC one.
fn check_metrics_listen(
    address: &str,
    grpc: SocketAddr,
    origin: Source,
) -> Result<SocketAddr, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        key: "metrics.listen",
        origin: origin.clone(),
        reason,
    };
    let parsed: SocketAddr = address.trim().parse().map_err(|_| {
        invalid(format!(
            "`{address}` is not an address to listen on: use ip:port, such as 0.0.0.0:9530 or 127.0.0.1:9530"
        ))
    })?;
    if parsed.port() != 0 && parsed == grpc {
        return Err(invalid(format!(
            "{parsed} is the gRPC listen address too: give the metrics a port of their own, such as {}:9530",
            parsed.ip()
        )));
    }
    Ok(parsed)
}

/// Resolves how the node secures its connections; see [`SecurityConfig`].
fn security(
    overrides: &Overrides,
    file: FileTls,
    file_source: &Source,
    site_code: &SiteCode,
    upstream: &UpstreamConfig,
) -> Result<SecurityConfig, ConfigError> {
    let invalid = |key: &'static str, origin: Source, reason: String| ConfigError::Invalid {
        key,
        origin,
        reason,
    };
    let client_policy_needs_certificate = file.client_policy_needs_certificate;
    let explicit_files = file.ca.is_some() || file.certificate.is_some() || file.key.is_some();
    if overrides.insecure || file.insecure {
        let origin = if overrides.insecure {
            Source::Overrides
        } else {
            file_source.clone()
        };
        if overrides.pki_dir.is_some() || file.pki_dir.is_some() || explicit_files {
            return Err(invalid(
                "tls.insecure",
                origin,
                "plaintext is asked for, and certificates are given too: drop `insecure` to use them".into(),
            ));
        }
        return Ok(SecurityConfig::Insecure);
    }
    let identity = sitesync_security::Identity::Site(site_code.as_str().to_owned());
    let (pki_dir, pki_origin) = match (&overrides.pki_dir, &file.pki_dir) {
        (Some(dir), _) => (Some(dir.clone()), Source::Overrides),
        (None, Some(dir)) => (Some(dir.clone()), file_source.clone()),
        (None, None) => (None, Source::Default),
    };
    if let Some(dir) = pki_dir {
        if explicit_files && pki_origin != Source::Overrides {
            return Err(invalid(
                "tls.pki_dir",
                pki_origin,
                "give either `pki_dir` or the files `ca`, `certificate` and `key`, not both".into(),
            ));
        }
        let files = TlsFiles::in_pki_dir(&dir, &identity);
        for (path, what) in [
            (&files.ca, "the CA certificate"),
            (&files.certificate, "this site's certificate"),
            (&files.key, "this site's key"),
        ] {
            if !path.exists() {
                return Err(invalid(
                    "tls.pki_dir",
                    pki_origin,
                    format!(
                        "{} has no {what} ({}): create it with `sitesyncctl pki issue site {site_code} --dir {}`",
                        dir.display(),
                        path.display(),
                        dir.display()
                    ),
                ));
            }
        }
        return Ok(SecurityConfig::Tls {
            files,
            client_policy_needs_certificate,
        });
    }
    match (file.ca, file.certificate, file.key) {
        (Some(ca), Some(certificate), Some(key)) => Ok(SecurityConfig::Tls {
            files: TlsFiles {
                ca,
                certificate,
                key,
                crl: file.crl,
            },
            client_policy_needs_certificate,
        }),
        (None, None, None) if matches!(upstream, UpstreamConfig::Parent(_)) => Err(invalid(
            "tls",
            Source::Default,
            format!(
                "a node with a parent needs the hierarchy's certificates: issue them where the CA is kept with `sitesyncctl pki issue site {site_code}` and pass --pki-dir (or set [tls] pki_dir); --insecure gives plaintext for a lab"
            ),
        )),
        (None, None, None) => Ok(SecurityConfig::SelfProvisioned {
            client_policy_needs_certificate,
        }),
        _ => Err(invalid(
            "tls",
            file_source.clone(),
            "give all three of `ca`, `certificate` and `key` (or `pki_dir`)".into(),
        )),
    }
}

impl NodeConfig {
    /// The address this node gives others to reach it: `advertise`, else `listen`.
    pub fn advertised_address(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| self.listen.to_string())
    }
}

impl SyncSection {
    /// The sync settings this section describes, or the key that is wrong and why.
    pub fn settings(&self) -> Result<SyncSettings, (&'static str, String)> {
        let selectors = |key: &'static str, values: &[String]| {
            values
                .iter()
                .map(|v| v.parse::<CategorySelector>().map_err(|e| (key, e)))
                .collect::<Result<Vec<_>, _>>()
        };
        let mut settings = SyncSettings {
            products: selectors("sync.products", &self.products)?,
            classifications: selectors("sync.classifications", &self.classifications)?,
            languages: self.languages.clone(),
            ..SyncSettings::default()
        };
        if let Some(schedule) = &self.schedule {
            settings.schedule = schedule
                .parse::<Schedule>()
                .map_err(|e| ("sync.schedule", e.to_string()))?;
        }
        if let Some(retry) = &self.retry {
            settings.retry = retry
                .parse::<RetryPolicy>()
                .map_err(|e| ("sync.retry", e.to_string()))?;
        }
        Ok(settings)
    }
}

/// Checks a child's address: `host:port`, optionally with an `http://` or `https://`
/// scheme, which is dropped. Returns `host:port`.
pub fn validate_address(address: &str) -> Result<String, String> {
    let bare = address
        .strip_prefix("http://")
        .or_else(|| address.strip_prefix("https://"))
        .unwrap_or(address)
        .trim_end_matches('/');
    let help = "give the address the parent can reach the child at, as host:port (for example 10.0.0.5:7443)";
    if bare.is_empty() {
        return Err(format!("the child's address is empty: {help}"));
    }
    let authority: http::uri::Authority = bare
        .parse()
        .map_err(|e| format!("the child's address `{address}` is not valid ({e}): {help}"))?;
    if authority.as_str() != bare || authority.port_u16().is_none() {
        return Err(format!(
            "the child's address `{address}` is not host:port: {help}"
        ));
    }
    if matches!(authority.host(), "0.0.0.0" | "[::]" | "::") {
        return Err(format!(
            "the child's address `{address}` is a wildcard the parent cannot connect to: {help}"
        ));
    }
    Ok(bare.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PKI directory with a CA and a certificate for site `code`, as `sitesyncctl pki`
    /// lays it out: what a child site needs.
    fn pki_for(code: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let authority = sitesync_security::pki::Authority::init(dir.path(), "test").unwrap();
        authority
            .issue(
                &sitesync_security::Identity::site(code).unwrap(),
                &[],
                sitesync_security::pki::DEFAULT_VALIDITY,
            )
            .unwrap();
        dir
    }

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn no_config_is_the_top_site_cen_on_the_sample_catalog() {
        let config = NodeConfig::load(None, &Overrides::default()).unwrap();
        assert_eq!(config.site_code.as_str(), "CEN");
        assert_eq!(config.role, Role::Site);
        assert_eq!(config.data_dir, PathBuf::from("./sitesync-data"));
        assert_eq!(config.upstream, UpstreamConfig::Sample);
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.cache_bytes, 32 << 20);
    }

    #[test]
    fn layers_override_in_order() {
        let (_dir, path) = write(
            "site_code = \"PR1\"\nlisten = \"127.0.0.1:9000\"\n[upstream]\nkind = \"directory\"\npath = \"/srv/catalog\"\n[sync]\nproducts = [\"Windows 10\"]\nschedule = \"12h\"\n",
        );
        let from_file = NodeConfig::load(Some(&path), &Overrides::default()).unwrap();
        assert_eq!(from_file.site_code.as_str(), "PR1");
        assert_eq!(from_file.listen.port(), 9000);
        assert_eq!(
            from_file.upstream,
            UpstreamConfig::Directory("/srv/catalog".into())
        );
        assert_eq!(from_file.sync.products, vec!["Windows 10".to_owned()]);
        assert_eq!(from_file.sync.schedule.as_deref(), Some("12h"));

        let overrides = Overrides {
            site_code: Some("pr2".into()),
            listen: Some("127.0.0.1:0".into()),
            ..Overrides::default()
        };
        let overridden = NodeConfig::load(Some(&path), &overrides).unwrap();
        assert_eq!(overridden.site_code.as_str(), "PR2");
        assert_eq!(overridden.listen.port(), 0);
        assert_eq!(overridden.upstream, from_file.upstream);
    }

    #[test]
    fn a_bad_value_names_its_key_and_where_it_came_from() {
        let (_dir, path) = write("site_code = \"CENTRAL\"\n");
        let error = NodeConfig::load(Some(&path), &Overrides::default()).unwrap_err();
        let text = error.to_string();
        assert!(text.starts_with("site_code (from "), "{text}");
        assert!(text.contains("node.toml"), "{text}");
        assert!(text.contains("three letters or digits"), "{text}");

        let overrides = Overrides {
            listen: Some("localhost".into()),
            ..Overrides::default()
        };
        let error = NodeConfig::load(None, &overrides).unwrap_err().to_string();
        assert!(
            error.starts_with("listen (from the environment or command line)"),
            "{error}"
        );

        let (_dir, path) = write("[upstream]\nkind = \"directory\"\n");
        let error = NodeConfig::load(Some(&path), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("upstream.path"), "{error}");
    }

    #[test]
    fn metrics_are_off_unless_a_listen_address_is_given() {
        let config = NodeConfig::load(None, &Overrides::default()).unwrap();
        assert_eq!(config.metrics_listen, None);

        let (_dir, path) = write("[metrics]\nlisten = \"0.0.0.0:9530\"\n");
        let config = NodeConfig::load(Some(&path), &Overrides::default()).unwrap();
        assert_eq!(config.metrics_listen, Some("0.0.0.0:9530".parse().unwrap()));
        let flag = Overrides {
            metrics_listen: Some("127.0.0.1:0".into()),
            ..Overrides::default()
        };
        let config = NodeConfig::load(Some(&path), &flag).unwrap();
        assert_eq!(config.metrics_listen, Some("127.0.0.1:0".parse().unwrap()));

        for (text, reason) in [
            (
                "[metrics]\nlisten = \"localhost\"\n",
                "is not an address to listen on",
            ),
            (
                "[metrics]\nlisten = \"0.0.0.0:99999\"\n",
                "is not an address to listen on",
            ),
            (
                "listen = \"127.0.0.1:8530\"\n[metrics]\nlisten = \"127.0.0.1:8530\"\n",
                "is the gRPC listen address too",
            ),
            ("[metrics]\nport = 9530\n", "unknown field `port`"),
        ] {
            let (_dir, path) = write(text);
            let error = NodeConfig::load(Some(&path), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(error.contains(reason), "{text:?}: {error}");
        }
        let (_dir, path) = write("[metrics]\nlisten = \"metrics:9530\"\n");
        let error = NodeConfig::load(Some(&path), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("metrics.listen (from "), "{error}");
        assert!(error.contains("node.toml"), "{error}");
    }

    #[test]
    fn the_advertised_address_is_where_others_reach_the_node() {
        let config = NodeConfig::load(None, &Overrides::default()).unwrap();
        assert_eq!(config.advertised_address(), DEFAULT_LISTEN);

        let (_dir, path) = write("listen = \"0.0.0.0:8530\"\nadvertise = \"pr1.example:8530\"\n");
        let config = NodeConfig::load(Some(&path), &Overrides::default()).unwrap();
        assert_eq!(config.advertised_address(), "pr1.example:8530");
        let overrides = Overrides {
            advertise: Some("https://pr1:9000".into()),
            ..Overrides::default()
        };
        let config = NodeConfig::load(Some(&path), &overrides).unwrap();
        assert_eq!(config.advertised_address(), "pr1:9000");

        // An address no other node can connect to is refused at load.
        for address in ["0.0.0.0:8530", "pr1"] {
            let overrides = Overrides {
                advertise: Some(address.into()),
                ..Overrides::default()
            };
            let error = NodeConfig::load(None, &overrides).unwrap_err().to_string();
            assert!(error.starts_with("advertise (from "), "{error}");
        }
    }

    #[test]
    fn unknown_keys_and_bad_syntax_are_refused() {
        let (_dir, path) = write("site_kode = \"CEN\"\n");
        let error = NodeConfig::load(Some(&path), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown field `site_kode`"), "{error}");
        let (_dir, path) = write("site_code = \n");
        assert!(matches!(
            NodeConfig::load(Some(&path), &Overrides::default()),
            Err(ConfigError::Syntax { .. })
        ));
    }

    #[test]
    fn sync_settings_and_parents_are_validated_with_the_key_named() {
        let cases = [
            ("[sync]\nschedule = \"every tuesday\"\n", "sync.schedule"),
            ("[sync]\nretry = \"soon\"\n", "sync.retry"),
            ("[sync]\nproducts = [\" \"]\n", "sync.products"),
            (
                "[upstream]\nkind = \"parent\"\naddress = \"cen.example\"\n",
                "upstream.address",
            ),
            ("[upstream]\nkind = \"parent\"\n", "upstream.address"),
            ("[upstream]\nkind = \"mirror\"\n", "upstream.kind"),
        ];
        for (text, key) in cases {
            let (_dir, path) = write(text);
            let error = NodeConfig::load(Some(&path), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(error.starts_with(key), "{text:?}: {error}");
        }
        let (_dir, path) = write("[upstream]\nkind = \"parent\"\naddress = \"cen.example:8530\"\n");
        let pki = pki_for("CEN");
        let with_certificates = Overrides {
            pki_dir: Some(pki.path().to_owned()),
            ..Overrides::default()
        };
        let child = NodeConfig::load(Some(&path), &with_certificates).unwrap();
        assert_eq!(
            child.upstream,
            UpstreamConfig::Parent("cen.example:8530".into())
        );
        let both = Overrides {
            upstream_dir: Some("/srv/catalog".into()),
            parent: Some("cen.example:8530".into()),
            ..Overrides::default()
        };
        let error = NodeConfig::load(None, &both).unwrap_err().to_string();
        assert!(error.contains("give one"), "{error}");
    }

    #[test]
    fn a_wsus_upstream_is_chosen_by_file_or_flag_with_its_transport_settings() {
        let (_dir, path) = write(
            "[upstream]\nkind = \"wsus\"\nurl = \"https://wsus.example:8531\"\nca_file = \"/etc/wsus-ca.pem\"\nproxy = \"http://proxy.example:3128\"\nprotocol_version = \"1.7\"\naccount_name = \"cen.example\"\nconnect_timeout_secs = 10\nrequest_timeout_secs = 600\nretries = 2\n",
        );
        let from_file = NodeConfig::load(Some(&path), &Overrides::default()).unwrap();
        let UpstreamConfig::Wsus(settings) = &from_file.upstream else {
            panic!("{:?}", from_file.upstream);
        };
        assert_eq!(settings.server.as_str(), "https://wsus.example:8531");
        assert_eq!(settings.ca_file, Some(PathBuf::from("/etc/wsus-ca.pem")));
        assert_eq!(
            settings.proxy,
            ProxySetting::Url("http://proxy.example:3128".into())
        );
        assert_eq!(settings.protocol_version.as_str(), "1.7");
        assert_eq!(settings.account_name, "cen.example");
        assert_eq!(settings.connect_timeout, Duration::from_secs(10));
        assert_eq!(settings.request_timeout, Duration::from_secs(600));
        assert_eq!(settings.retry.attempts, 3);

        // The flag names the server; the file's other keys still apply.
        let flag = Overrides {
            upstream_wsus: Some("http://wsus2.example:8530".into()),
            ..Overrides::default()
        };
        let overridden = NodeConfig::load(Some(&path), &flag).unwrap();
        let UpstreamConfig::Wsus(flagged) = &overridden.upstream else {
            panic!("{:?}", overridden.upstream);
        };
        assert_eq!(flagged.server.as_str(), "http://wsus2.example:8530");
        assert_eq!(flagged.proxy, settings.proxy);
        // Without a file: that server, the defaults otherwise (the environment's proxy).
        let bare = NodeConfig::load(None, &flag).unwrap();
        let UpstreamConfig::Wsus(bare) = &bare.upstream else {
            panic!("{:?}", bare.upstream);
        };
        assert_eq!(bare.proxy, ProxySetting::FromEnvironment);
        // `kind = "wsus"` alone, or `--upstream wsus`: Microsoft Update.
        let (_dir, path) = write("[upstream]\nkind = \"wsus\"\nproxy = \"none\"\n");
        let microsoft = NodeConfig::load(Some(&path), &Overrides::default()).unwrap();
        let UpstreamConfig::Wsus(microsoft) = &microsoft.upstream else {
            panic!("{:?}", microsoft.upstream);
        };
        assert_eq!(
            microsoft.server.as_str(),
            "https://sws.update.microsoft.com"
        );
        assert_eq!(microsoft.proxy, ProxySetting::Direct);
        let by_kind = Overrides {
            upstream_kind: Some("wsus".into()),
            ..Overrides::default()
        };
        assert!(matches!(
            NodeConfig::load(None, &by_kind).unwrap().upstream,
            UpstreamConfig::Wsus(_)
        ));

        let refusals = [
            (
                "[upstream]\nkind = \"wsus\"\nurl = \"ftp://wsus.example\"\n",
                "upstream.url",
            ),
            (
                "[upstream]\nkind = \"wsus\"\nproxy = \"proxy.example\"\n",
                "upstream.proxy",
            ),
            (
                "[upstream]\nkind = \"wsus\"\nprotocol_version = \"2.0\"\n",
                "upstream.protocol_version",
            ),
            (
                "[upstream]\nkind = \"wsus\"\nrequest_timeout_secs = 0\n",
                "upstream.request_timeout_secs",
            ),
            ("[upstream]\nkind = \"wsus\"\npath = \"/srv\"\n", "upstream"),
            (
                "[upstream]\nkind = \"directory\"\npath = \"/srv\"\nurl = \"http://w:8530\"\n",
                "upstream",
            ),
            (
                "role = \"internet\"\n[upstream]\nkind = \"wsus\"\n",
                "upstream.kind",
            ),
        ];
        for (text, key) in refusals {
            let (_dir, path) = write(text);
            let error = NodeConfig::load(Some(&path), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(error.starts_with(key), "{text:?}: {error}");
        }
        let two = Overrides {
            upstream_wsus: Some("http://wsus.example:8530".into()),
            upstream_dir: Some("/srv/catalog".into()),
            ..Overrides::default()
        };
        let error = NodeConfig::load(None, &two).unwrap_err().to_string();
        assert!(error.contains("more than one upstream"), "{error}");
    }

    #[test]
    fn an_import_upstream_is_chosen_by_file_or_flag_and_checked() {
        let pki = pki_for("IN1");
        let certificates = Overrides {
            site_code: Some("IN1".into()),
            pki_dir: Some(pki.path().to_owned()),
            ..Overrides::default()
        };
        // Any role: an internet-facing node with no path to its site imports too.
        let (_dir, path) = write("role = \"internet\"\n[upstream]\nkind = \"import\"\n");
        let from_file = NodeConfig::load(Some(&path), &certificates).unwrap();
        assert_eq!(from_file.upstream, UpstreamConfig::Import);
        assert_eq!(from_file.role, Role::Internet);
        let by_flag = Overrides {
            upstream_kind: Some("import".into()),
            ..certificates.clone()
        };
        assert_eq!(
            NodeConfig::load(None, &by_flag).unwrap().upstream,
            UpstreamConfig::Import
        );

        // Another hierarchy's CA, trusted for imports, must be a readable certificate.
        let ca = pki.path().join("ca.pem");
        let (_dir, path) = write(&format!(
            "[upstream]\nkind = \"import\"\n[import]\ntrust = [{:?}]\n",
            ca.display().to_string()
        ));
        let trusting = NodeConfig::load(Some(&path), &certificates).unwrap();
        assert_eq!(trusting.import_trust, vec![ca]);

        let refusals = [
            (
                "[upstream]\nkind = \"import\"\npath = \"/srv\"\n".to_owned(),
                "upstream",
            ),
            (
                "[upstream]\nkind = \"import\"\n[import]\ntrust = [\"/no/such/ca.pem\"]\n"
                    .to_owned(),
                "import.trust",
            ),
            (
                "[import]\ntrust = [\"/no/such/ca.pem\"]\n".to_owned(),
                "import.trust",
            ),
        ];
        for (text, key) in refusals {
            let (_dir, path) = write(&text);
            let error = NodeConfig::load(Some(&path), &certificates)
                .unwrap_err()
                .to_string();
            assert!(error.starts_with(key), "{text:?}: {error}");
        }
        // Imports verify signatures: not in plaintext.
        let insecure = Overrides {
            upstream_kind: Some("import".into()),
            insecure: true,
            ..Overrides::default()
        };
        let error = NodeConfig::load(None, &insecure).unwrap_err().to_string();
        assert!(error.contains("signatures"), "{error}");
        // The flag names only kinds without their own flags.
        let contradicting = Overrides {
            upstream_kind: Some("import".into()),
            parent: Some("cen.example:8530".into()),
            ..certificates
        };
        let error = NodeConfig::load(None, &contradicting)
            .unwrap_err()
            .to_string();
        assert!(error.contains("--upstream import takes no"), "{error}");
    }

    #[test]
    fn an_internet_node_needs_its_site_as_upstream() {
        let (_dir, path) = write(
            "role = \"internet\"\n[upstream]\nkind = \"parent\"\naddress = \"pr1.example:8530\"\n",
        );
        let pki = pki_for("CEN");
        let with_certificates = Overrides {
            pki_dir: Some(pki.path().to_owned()),
            ..Overrides::default()
        };
        let internet = NodeConfig::load(Some(&path), &with_certificates).unwrap();
        assert_eq!(internet.role, Role::Internet);
        assert_eq!(
            internet.upstream,
            UpstreamConfig::Parent("pr1.example:8530".into())
        );

        let by_flags = Overrides {
            role: Some("internet".into()),
            parent: Some("pr1.example:8530".into()),
            ..with_certificates
        };
        assert_eq!(
            NodeConfig::load(None, &by_flags).unwrap().role,
            Role::Internet
        );

        for text in [
            "role = \"internet\"\n",
            "role = \"internet\"\n[upstream]\nkind = \"directory\"\npath = \"/srv/catalog\"\n",
        ] {
            let (_dir, path) = write(text);
            let error = NodeConfig::load(Some(&path), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(error.starts_with("upstream.kind"), "{text:?}: {error}");
            assert!(error.contains("--parent"), "{error}");
        }
    }

    #[test]
    fn a_child_needs_certificates_and_plaintext_excludes_them() {
        let child = Overrides {
            parent: Some("cen.example:8530".into()),
            site_code: Some("PR1".into()),
            ..Overrides::default()
        };
        let error = NodeConfig::load(None, &child).unwrap_err().to_string();
        assert!(error.starts_with("tls "), "{error}");
        assert!(error.contains("--pki-dir"), "{error}");

        let pki = pki_for("PR1");
        let secure = NodeConfig::load(
            None,
            &Overrides {
                pki_dir: Some(pki.path().to_owned()),
                ..child.clone()
            },
        )
        .unwrap();
        assert!(matches!(secure.security, SecurityConfig::Tls { .. }));
        // A directory without this site's certificate says how to issue one.
        let other = pki_for("PR2");
        let error = NodeConfig::load(
            None,
            &Overrides {
                pki_dir: Some(other.path().to_owned()),
                ..child.clone()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("pki issue site PR1"), "{error}");

        let plaintext = Overrides {
            insecure: true,
            ..child.clone()
        };
        assert_eq!(
            NodeConfig::load(None, &plaintext).unwrap().security,
            SecurityConfig::Insecure
        );
        let both = Overrides {
            pki_dir: Some(pki.path().to_owned()),
            ..plaintext
        };
        let error = NodeConfig::load(None, &both).unwrap_err().to_string();
        assert!(error.starts_with("tls.insecure"), "{error}");

        // A top site with nothing configured makes its own CA.
        assert!(matches!(
            NodeConfig::load(None, &Overrides::default())
                .unwrap()
                .security,
            SecurityConfig::SelfProvisioned { .. }
        ));
    }
}

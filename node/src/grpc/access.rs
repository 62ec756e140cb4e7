//! Authorization of every call from the peer's certificate (SPEC invariant 6).
//!
//! One tower layer in front of every service looks up the rule of the called method
//! ([`rule_for`]) and checks the caller's identity against it, so no method can be served
//! without a rule: a method this table does not know is refused. A denial answers
//! `UNAUTHENTICATED` (no usable certificate) or `PERMISSION_DENIED` (the identity may not
//! call this method) with a message naming the identity and the rule, is logged, and is
//! counted by rule in the node's metrics.
//!
//! The rules:
//! - `Admin` methods that change something, or export the catalog: operators only.
//! - Other `Admin` methods (reads): any identity of the hierarchy.
//! - `UpdateServer`: registered children (child sites and the site's internet-facing node).
//! - `SiteReplication`: registered child *sites* (an internet-facing node has no site
//!   database).
//! - `Hierarchy.RequestSync`: the configured parent only.
//! - `Hierarchy.RegisterChild`: any site, for itself (the handler checks the code).
//! - `Hierarchy.Report*`: registered children, for themselves.
//! - `ClientPolicy`: anyone, certificate or not, unless configured to need one.
//! - Health and reflection: anyone, so probes and stock tools work.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::CertificateDer;
use sitesync_security::transport::PeerError;
use sitesync_security::{Identity, TlsContext};
use tonic::codegen::http;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tracing::warn;

pub use crate::hierarchy::{ChildKind, Relations};
use crate::metrics::Metrics;

/// Who may call a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// No certificate needed.
    Anyone,
    /// Any certificate of the hierarchy: sites and operators.
    AnyIdentity,
    /// Operators only.
    Operator,
    /// The site this node is configured to sync from.
    Parent,
    /// Any site (registration: the handler checks the site registers itself).
    Site,
    /// A registered child: a child site or this site's internet-facing node.
    Child,
    /// A registered child site (not an internet-facing node).
    ChildSite,
}

impl Rule {
    /// The rule's name, as the metrics label refusals.
    pub fn name(self) -> &'static str {
        match self {
            Self::Anyone => "anyone",
            Self::AnyIdentity => "any_identity",
            Self::Operator => "operator",
            Self::Parent => "parent",
            Self::Site => "site",
            Self::Child => "child",
            Self::ChildSite => "child_site",
        }
    }

    /// The rule in words, for denials.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Anyone => "open to anyone",
            Self::AnyIdentity => "needs a certificate of this hierarchy",
            Self::Operator => "only operators may change a site",
            Self::Parent => "only the configured parent site may ask for a sync",
            Self::Site => "only sites may register as children",
            Self::Child => {
                "only registered child sites and this site's internet-facing node may pull from its update server"
            }
            Self::ChildSite => "only registered child sites may replicate the site database",
        }
    }
}

/// The rule of a gRPC method path (`/package.Service/Method`); `None` for unknown methods.
pub fn rule_for(path: &str, client_policy_needs_certificate: bool) -> Option<Rule> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    Some(match service {
        "sitesync.v1.Admin" => match method {
            "RunSync" | "SetSyncSettings" | "ExportCatalog" | "ImportCatalog" | "PublishUpdate"
            | "DelegatePublisher" | "RevokePublisher" | "BuildLegacyCatalog" => Rule::Operator,
            "GetSiteStatus"
            | "GetHierarchy"
            | "WatchSync"
            | "ListStatusMessages"
            | "ListUpdates"
            | "GetUpdate"
            | "GetSyncSettings"
            | "GetClientPolicy"
            | "ListPublishers"
            | "GetLegacyCatalogStatus" => Rule::AnyIdentity,
            _ => return None,
        },
        "sitesync.v1.UpdateServer" => match method {
            "GetCatalogInfo" | "GetChanges" | "GetUpdateDocuments" => Rule::Child,
            _ => return None,
        },
        "sitesync.v1.SiteReplication" => match method {
            "Replicate" | "GetSiteDatabaseInfo" => Rule::ChildSite,
            _ => return None,
        },
        "sitesync.v1.Hierarchy" => match method {
            "RequestSync" => Rule::Parent,
            "RegisterChild" => Rule::Site,
            "ReportStatusMessages" | "ReportSiteStates" => Rule::Child,
            _ => return None,
        },
        "sitesync.v1.ClientPolicy" => match method {
            "GetMachinePolicy" | "GetLegacyScanCatalog" if client_policy_needs_certificate => {
                Rule::AnyIdentity
            }
            "GetMachinePolicy" | "GetLegacyScanCatalog" => Rule::Anyone,
            _ => return None,
        },
        "grpc.health.v1.Health" | "grpc.reflection.v1.ServerReflection" => Rule::Anyone,
        _ => return None,
    })
}

/// The checks, shared by every connection.
#[derive(Debug, Clone)]
pub struct Access {
    /// `None` on a plaintext node (`--insecure`): every call is let through.
    tls: Option<Arc<TlsContext>>,
    relations: Arc<dyn Relations>,
    client_policy_needs_certificate: bool,
    /// Where refusals are counted, when the node keeps metrics.
    metrics: Option<Arc<Metrics>>,
}

/// The caller of an authorized call, in the request's extensions for handlers that check
/// more (a child registers or reports only for itself). `None` on a plaintext node and for
/// calls open to anyone made without a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller(pub Option<Identity>);

impl Caller {
    /// Refuses a site that acts for another: `site_code` must be the caller's own, when the
    /// caller is known.
    pub fn must_be_site<T>(
        request: &tonic::Request<T>,
        site_code: &str,
        what: &str,
    ) -> Result<(), tonic::Status> {
        match request.extensions().get::<Caller>() {
            Some(caller) => caller.acts_for(site_code, what),
            None => Ok(()),
        }
    }

    /// [`Caller::must_be_site`] for a caller taken from its request earlier (a streaming
    /// call names its site only in its first message).
    pub fn acts_for(&self, site_code: &str, what: &str) -> Result<(), tonic::Status> {
        match self {
            Caller(Some(Identity::Site(code))) if code.eq_ignore_ascii_case(site_code) => Ok(()),
            Caller(Some(identity)) => {
                warn!(%identity, site_code, what, "call refused: a site acting for another");
                Err(tonic::Status::permission_denied(format!(
                    "{identity} may not {what} for site {site_code}: a site acts only for itself"
                )))
            }
            _ => Ok(()),
        }
    }
}

impl Access {
    pub fn new(
        tls: Option<Arc<TlsContext>>,
        relations: Arc<dyn Relations>,
        client_policy_needs_certificate: bool,
    ) -> Self {
        Self {
            tls,
            relations,
            client_policy_needs_certificate,
            metrics: None,
        }
    }

    /// Counts each refusal by its rule in `metrics`.
    pub fn with_metrics(self, metrics: Arc<Metrics>) -> Self {
        Self {
            metrics: Some(metrics),
            ..self
        }
    }

    fn refused(&self, rule: Rule) {
        if let Some(metrics) = &self.metrics {
            metrics.server.refused(rule.name());
        }
    }

    /// Checks a call to `path` by the peer whose certificate chain is `certificates`.
    pub fn check(
        &self,
        path: &str,
        certificates: Option<&[CertificateDer<'static>]>,
    ) -> Result<Caller, tonic::Status> {
        let Some(tls) = &self.tls else {
            return Ok(Caller(None));
        };
        let Some(rule) = rule_for(path, self.client_policy_needs_certificate) else {
            return Err(tonic::Status::unimplemented(format!(
                "{path} is not a method of this node"
            )));
        };
        let identity = match certificates.and_then(|c| c.first()) {
            Some(leaf) if tls.current().is_revoked(leaf) => Err(PeerError::Revoked),
            Some(leaf) => {
                Identity::from_certificate(leaf).map_err(|e| PeerError::Identity(e.to_string()))
            }
            None => Err(PeerError::NoCertificate),
        };
        let identity = match (identity, rule) {
            (Ok(identity), _) => identity,
            (Err(_), Rule::Anyone) => return Ok(Caller(None)),
            (Err(reason), _) => {
                warn!(method = path, %reason, rule = rule.describe(), "call refused: no usable certificate");
                self.refused(rule);
                return Err(tonic::Status::unauthenticated(format!(
                    "{path}: {reason}; this method {} (present a certificate issued by `sitesyncctl pki issue`)",
                    rule.describe()
                )));
            }
        };
        if self.allows(rule, &identity) {
            return Ok(Caller(Some(identity)));
        }
        warn!(method = path, %identity, rule = rule.describe(), "call refused");
        self.refused(rule);
        Err(tonic::Status::permission_denied(format!(
            "{path} refused for {identity}: {}",
            rule.describe()
        )))
    }

    fn allows(&self, rule: Rule, identity: &Identity) -> bool {
        match (rule, identity) {
            (Rule::Anyone | Rule::AnyIdentity, _) => true,
            (Rule::Operator, Identity::Operator(_)) => true,
            (Rule::Parent, Identity::Site(code)) => {
                self.relations.parent_site_code().as_deref() == Some(code.as_str())
            }
            (Rule::Site, Identity::Site(_)) => true,
            (Rule::Child, Identity::Site(code)) => self.relations.child(code).is_some(),
            (Rule::ChildSite, Identity::Site(code)) => {
                self.relations.child(code) == Some(ChildKind::Site)
            }
            _ => false,
        }
    }
}

/// The tower layer that runs [`Access::check`] before every call.
#[derive(Debug, Clone)]
pub struct AccessLayer(pub Access);

impl<S> tower::Layer<S> for AccessLayer {
    type Service = AccessService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessService {
            inner,
            access: self.0.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AccessService<S> {
    inner: S,
    access: Access,
}

impl<S, B, R> tower::Service<http::Request<B>> for AccessService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let certificates = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(TlsConnectInfo::peer_certs);
        match self.access.check(
            request.uri().path(),
            certificates.as_deref().map(Vec::as_slice),
        ) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Box::pin(self.inner.call(request))
            }
            Err(status) => Box::pin(std::future::ready(Ok(status.into_http()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_of_the_contract_has_a_rule() {
        let descriptor = <prost_types::FileDescriptorSet as prost::Message>::decode(
            sitesync_proto::FILE_DESCRIPTOR_SET,
        )
        .unwrap();
        let mut methods = 0;
        for file in &descriptor.file {
            for service in &file.service {
                for method in &service.method {
                    let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                    assert!(rule_for(&path, false).is_some(), "{path} has no rule");
                    methods += 1;
                }
            }
        }
        assert!(methods >= 24, "{methods}");
        assert_eq!(
            rule_for("/sitesync.v1.Admin/RunSync", false),
            Some(Rule::Operator)
        );
        assert_eq!(
            rule_for("/sitesync.v1.Hierarchy/RequestSync", false),
            Some(Rule::Parent)
        );
        assert_eq!(rule_for("/sitesync.v1.Admin/Nothing", false), None);
        assert_eq!(rule_for("nonsense", false), None);
    }

    /// A child site CEN knows as its parent, with the child sites PR1 and the
    /// internet-facing node PI1 registered below it.
    #[derive(Debug)]
    struct Known;

    impl Relations for Known {
        fn parent_site_code(&self) -> Option<String> {
            Some("CEN".into())
        }

        fn child(&self, site_code: &str) -> Option<ChildKind> {
            match site_code {
                "PR1" => Some(ChildKind::Site),
                "PI1" => Some(ChildKind::Internet),
                _ => None,
            }
        }
    }

    #[test]
    fn each_identity_gets_what_its_rule_allows_and_no_certificate_only_open_methods() {
        use sitesync_security::pki::{Authority, DEFAULT_VALIDITY, first_certificate};
        let dir = tempfile::tempdir().unwrap();
        let authority = Authority::init(dir.path(), "test").unwrap();
        let certificate = |identity: &Identity| {
            let issued = authority.issue(identity, &[], DEFAULT_VALIDITY).unwrap();
            CertificateDer::from(
                first_certificate(&std::fs::read(issued.certificate).unwrap()).unwrap(),
            )
        };
        let own = Identity::site("PR5").unwrap();
        certificate(&own);
        let context =
            TlsContext::load(sitesync_security::TlsFiles::in_pki_dir(dir.path(), &own)).unwrap();
        let [operator, parent, child, internet, stranger] = [
            Identity::operator("alice").unwrap(),
            Identity::site("CEN").unwrap(),
            Identity::site("PR1").unwrap(),
            Identity::site("PI1").unwrap(),
            Identity::site("PR9").unwrap(),
        ]
        .map(|identity| certificate(&identity));
        let access = |needs_certificate| {
            Access::new(Some(context.clone()), Arc::new(Known), needs_certificate)
        };
        let open = access(false);
        let code = |access: &Access, path: &str, leaf: Option<&CertificateDer<'static>>| {
            access
                .check(path, leaf.map(std::slice::from_ref))
                .err()
                .map(|status| status.code())
        };
        use tonic::Code::{PermissionDenied as Denied, Unauthenticated, Unimplemented};
        let cases: [(&str, [Option<tonic::Code>; 6]); 8] = [
            // No certificate, operator, parent, child site, internet node, stranger site.
            (
                "/sitesync.v1.Admin/RunSync",
                [
                    Some(Unauthenticated),
                    None,
                    Some(Denied),
                    Some(Denied),
                    Some(Denied),
                    Some(Denied),
                ],
            ),
            (
                "/sitesync.v1.Admin/GetSiteStatus",
                [Some(Unauthenticated), None, None, None, None, None],
            ),
            (
                "/sitesync.v1.UpdateServer/GetChanges",
                [
                    Some(Unauthenticated),
                    Some(Denied),
                    Some(Denied),
                    None,
                    None,
                    Some(Denied),
                ],
            ),
            (
                "/sitesync.v1.SiteReplication/Replicate",
                [
                    Some(Unauthenticated),
                    Some(Denied),
                    Some(Denied),
                    None,
                    Some(Denied),
                    Some(Denied),
                ],
            ),
            (
                "/sitesync.v1.Hierarchy/RequestSync",
                [
                    Some(Unauthenticated),
                    Some(Denied),
                    None,
                    Some(Denied),
                    Some(Denied),
                    Some(Denied),
                ],
            ),
            (
                "/sitesync.v1.Hierarchy/RegisterChild",
                [Some(Unauthenticated), Some(Denied), None, None, None, None],
            ),
            (
                "/sitesync.v1.ClientPolicy/GetMachinePolicy",
                [None, None, None, None, None, None],
            ),
            ("/sitesync.v1.Admin/Unknown", [Some(Unimplemented); 6]),
        ];
        for (path, expected) in cases {
            let callers = [
                ("no certificate", None),
                ("operator", Some(&operator)),
                ("parent", Some(&parent)),
                ("child site", Some(&child)),
                ("internet node", Some(&internet)),
                ("stranger site", Some(&stranger)),
            ];
            for ((who, caller), expected) in callers.into_iter().zip(expected) {
                assert_eq!(code(&open, path, caller), expected, "{path} by {who}");
            }
        }
        // A site asking for the client policy needs a certificate only when so configured.
        let closed = access(true);
        let path = "/sitesync.v1.ClientPolicy/GetMachinePolicy";
        assert_eq!(code(&closed, path, None), Some(Unauthenticated));
        assert_eq!(code(&closed, path, Some(&stranger)), None);
        // The caller is handed to the handler.
        assert_eq!(
            open.check(
                "/sitesync.v1.Admin/GetSiteStatus",
                Some(std::slice::from_ref(&child))
            )
            .unwrap(),
            Caller(Some(Identity::site("PR1").unwrap()))
        );
        assert_eq!(open.check(path, None).unwrap(), Caller(None));
    }
}

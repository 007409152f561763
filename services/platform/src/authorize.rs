//! Authentication and authorization of every call, before the call reaches a handler: the caller is read from the
//! client certificate the TLS handshake verified (its `spiffe://` URI SAN), its roles from its kind and the site's
//! role bindings, and the RPC's permission from [`crate::access::RPC_PERMISSIONS`]. A handler finds the
//! [`Caller`] in the request's extensions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use tonic::Status;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::access::{Permission, Principal, PrincipalKind, Role};
use crate::audit::{AuditEvent, AuditTrail, TargetSlot};

/// Who is calling, as a handler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The principal of the credential; `None` on a server that a test runs without authentication.
    pub principal: Option<Principal>,
    /// Its roles.
    pub roles: Vec<Role>,
}

impl Caller {
    /// The caller of a server running without authentication (tests that ask for plaintext).
    pub fn unauthenticated_test_caller() -> Self {
        Self {
            principal: None,
            roles: Vec::new(),
        }
    }

    /// The caller a request carries (set by [`AuthorizeLayer`]); a request that carries none (an in-process
    /// call) counts as the test caller.
    pub fn of<T>(request: &tonic::Request<T>) -> Self {
        request
            .extensions()
            .get::<Self>()
            .cloned()
            .unwrap_or_else(Self::unauthenticated_test_caller)
    }

    /// The caller for logs and the audit trail: `device/pc-0042`, or `unauthenticated` without authentication.
    pub fn describe(&self) -> String {
        match &self.principal {
            Some(principal) => principal.to_string(),
            None => "unauthenticated".to_owned(),
        }
    }
}

/// The roles granted to administrators, kept current by the service (from its database, or from the
/// distribution manager).
#[derive(Debug, Default)]
pub struct RoleBindings {
    granted: RwLock<BTreeMap<String, BTreeSet<Role>>>,
    blocked_devices: RwLock<BTreeSet<String>>,
    revoked_serials: RwLock<BTreeSet<String>>,
}

impl RoleBindings {
    /// Replaces the set of blocked devices.
    pub fn replace_blocked(&self, devices: impl IntoIterator<Item = String>) {
        *self
            .blocked_devices
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = devices.into_iter().collect();
    }

    /// Replaces the set of revoked credentials (certificate serials, lower-case hex).
    pub fn replace_revoked(&self, serials: impl IntoIterator<Item = String>) {
        *self
            .revoked_serials
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = serials.into_iter().collect();
    }

    /// Whether the credential with `serial` is revoked.
    pub fn is_revoked(&self, serial: &str) -> bool {
        self.revoked_serials
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .contains(serial)
    }

    /// Whether the device `id` is blocked.
    pub fn is_blocked(&self, id: &str) -> bool {
        self.blocked_devices
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .contains(id)
    }

    /// Replaces every binding: `(admin name, role)` pairs.
    pub fn replace(&self, bindings: impl IntoIterator<Item = (String, Role)>) {
        let mut granted: BTreeMap<String, BTreeSet<Role>> = BTreeMap::new();
        for (name, role) in bindings {
            granted.entry(name).or_default().insert(role);
        }
        *self
            .granted
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = granted;
    }

    /// The roles of `principal`: built in for devices and services, granted for administrators.
    pub fn roles_of(&self, principal: &Principal) -> Vec<Role> {
        if let Some(role) = principal.built_in_role() {
            return vec![role];
        }
        if principal.kind != PrincipalKind::Admin {
            return Vec::new();
        }
        self.granted
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&principal.name)
            .map(|roles| roles.iter().copied().collect())
            .unwrap_or_default()
    }
}

/// Decides calls for one site.
#[derive(Debug)]
pub struct Authorizer {
    trust_domain: String,
    bindings: Arc<RoleBindings>,
}

impl Authorizer {
    /// An authorizer for the site with `trust_domain`, reading administrators' roles from `bindings`.
    pub fn new(trust_domain: String, bindings: Arc<RoleBindings>) -> Self {
        Self {
            trust_domain,
            bindings,
        }
    }

    /// The caller of `path` with `leaf` (the client certificate, DER) when it may call it; the refusal otherwise.
    /// `required` is what [`crate::access::required`] says of `path`.
    pub fn authorize(
        &self,
        path: &str,
        required: Result<Option<Permission>, ()>,
        leaf: Option<&[u8]>,
    ) -> Result<Caller, Refusal> {
        let permission = match required {
            Ok(None) => return Ok(Caller::unauthenticated_test_caller()),
            Ok(Some(permission)) => permission,
            Err(()) => {
                return Err(Refusal::anonymous(Status::unimplemented(format!(
                    "{} is not an RPC of this server",
                    short(path)
                ))));
            }
        };
        if !permission.needs_certificate() {
            // The request carries its own credential (a bulk registration token) for the handler to check.
            return Ok(Caller::unauthenticated_test_caller());
        }
        let Some(leaf) = leaf else {
            return Err(Refusal::anonymous(Status::unauthenticated(format!(
                "{} needs a client certificate of this site (spiffe://{}/...); give the console its configuration \
                 (CLOUDDP_CONFIG) or --cert and --key",
                short(path),
                self.trust_domain
            ))));
        };
        let (principal, serial) = identify(leaf, &self.trust_domain).ok_or_else(|| {
            Refusal::anonymous(Status::unauthenticated(format!(
                "the client certificate names no principal of this site: it needs a URI SAN spiffe://{}/<admin|device|service>/<name>",
                self.trust_domain
            )))
        })?;
        if self.bindings.is_revoked(&serial) {
            return Err(Refusal {
                status: Status::unauthenticated(format!(
                    "the credential of {principal} with serial {serial} was revoked; ask a Full Administrator for a new one"
                )),
                principal: Some(principal),
                roles: Vec::new(),
            });
        }
        if principal.kind == PrincipalKind::Device && self.bindings.is_blocked(&principal.name) {
            return Err(Refusal {
                status: Status::permission_denied(format!(
                    "{principal} is blocked by an administrator of the site"
                )),
                principal: Some(principal),
                roles: vec![Role::Device],
            });
        }
        let roles = self.bindings.roles_of(&principal);
        if !roles.iter().any(|role| role.allows(permission)) {
            return Err(Refusal {
                status: denied(path, &principal, &roles, permission),
                principal: Some(principal),
                roles,
            });
        }
        Ok(Caller {
            principal: Some(principal),
            roles,
        })
    }
}

/// A refused call: the status to answer and who was refused, for the audit trail.
#[derive(Debug)]
pub struct Refusal {
    /// The answer.
    pub status: Status,
    /// The caller, when its certificate named one.
    pub principal: Option<Principal>,
    /// Its roles.
    pub roles: Vec<Role>,
}

impl Refusal {
    fn anonymous(status: Status) -> Self {
        Self {
            status,
            principal: None,
            roles: Vec::new(),
        }
    }
}

fn denied(path: &str, principal: &Principal, roles: &[Role], permission: Permission) -> Status {
    let holders: Vec<&str> = Role::holding(permission)
        .into_iter()
        .map(Role::name)
        .collect();
    let has = if roles.is_empty() {
        "no role".to_owned()
    } else {
        roles
            .iter()
            .map(|role| role.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    Status::permission_denied(format!(
        "{principal} ({has}) may not call {}: it needs the permission {permission}, which {} hold",
        short(path),
        holders.join(", ")
    ))
}

fn role_keys(roles: &[Role]) -> Vec<String> {
    roles.iter().map(|role| role.key().to_owned()).collect()
}

/// `Service/Method` of a full path without the package, at most 200 characters.
fn rpc_name(path: &str) -> String {
    path.trim_start_matches('/')
        .trim_start_matches("clouddp.v1.")
        .chars()
        .take(200)
        .collect()
}

/// `Service/Method` of a full path, at most 200 characters.
fn short(path: &str) -> String {
    let name = path.rsplit_once('.').map_or(path, |(_, rest)| rest);
    name.chars().take(200).collect()
}

/// The principal the URI SANs of a certificate (DER) name in `trust_domain`.
pub fn principal_of(leaf: &[u8], trust_domain: &str) -> Option<Principal> {
    identify(leaf, trust_domain).map(|(principal, _)| principal)
}

/// The principal a certificate (DER) names in `trust_domain`, and its serial (lower-case hex).
pub fn identify(leaf: &[u8], trust_domain: &str) -> Option<(Principal, String)> {
    let (_, certificate) = x509_parser::parse_x509_certificate(leaf).ok()?;
    let principal = uri_names(&certificate)
        .into_iter()
        .find_map(|uri| Principal::from_spiffe_id(uri, trust_domain))?;
    Some((principal, serial_hex(certificate.raw_serial())))
}

/// A serial number as the site writes it: lower-case hex without leading zero bytes or colons.
pub fn serial_hex(raw: &[u8]) -> String {
    let start = raw.iter().position(|byte| *byte != 0).unwrap_or(raw.len());
    hex::encode(&raw[start..])
}

/// The URI SANs of `certificate`.
pub fn uri_names<'a>(
    certificate: &'a x509_parser::certificate::X509Certificate<'_>,
) -> Vec<&'a str> {
    let Ok(Some(names)) = certificate.subject_alternative_name() else {
        return Vec::new();
    };
    names
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect()
}

/// The layer to put on a gRPC server: with an [`Authorizer`] every call is decided; without one (a test that asked
/// for plaintext) every call passes as the test caller.
#[derive(Debug, Clone, Default)]
pub struct AuthorizeLayer {
    authorizer: Option<Arc<Authorizer>>,
    audit: Option<AuditTrail>,
}

impl AuthorizeLayer {
    /// Decides calls with `authorizer`, or lets every call through without one; records changes and refusals
    /// in `audit`.
    pub fn new(authorizer: Option<Arc<Authorizer>>, audit: Option<AuditTrail>) -> Self {
        Self { authorizer, audit }
    }
}

impl<S> tower::Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorize {
            inner,
            authorizer: self.authorizer.clone(),
            audit: self.audit.clone(),
        }
    }
}

/// A service that decides each call before its handler runs.
#[derive(Debug, Clone)]
pub struct Authorize<S> {
    inner: S,
    authorizer: Option<Arc<Authorizer>>,
    audit: Option<AuditTrail>,
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, RequestBody> tower::Service<http::Request<RequestBody>> for Authorize<S>
where
    S: tower::Service<http::Request<RequestBody>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<RequestBody>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let required = crate::access::required(&path);
        let certificates = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(TlsConnectInfo::peer_certs);
        let decided = match &self.authorizer {
            None => Ok(Caller::unauthenticated_test_caller()),
            Some(authorizer) => {
                let leaf = certificates.as_ref().and_then(|chain| chain.first());
                authorizer.authorize(&path, required, leaf.map(|der| der.as_ref()))
            }
        };
        // An answer that streams is decided again while it lasts: a revoked role, credential or device ends it.
        // The chain is shared with the connection, not copied.
        let recheck =
            self.authorizer
                .clone()
                .zip(certificates)
                .map(|(authorizer, certificates)| Recheck {
                    authorizer,
                    path: path.clone(),
                    certificates,
                });
        let caller = match decided {
            Ok(caller) => caller,
            Err(refusal) => {
                tracing::info!(rpc = %path, code = ?refusal.status.code(), reason = %refusal.status.message(), "call refused");
                if let Some(audit) = &self.audit {
                    audit.record_refusal(AuditEvent {
                        time_ms: crate::clock::now_ms(),
                        principal: refusal
                            .principal
                            .as_ref()
                            .map_or_else(|| "unauthenticated".to_owned(), ToString::to_string),
                        roles: role_keys(&refusal.roles),
                        rpc: rpc_name(&path),
                        target: String::new(),
                        code: crate::audit::code_name(refusal.status.code()),
                        trace_id: crate::audit::trace_id(request.headers()),
                    });
                }
                return Box::pin(async move { Ok(refusal.status.into_http()) });
            }
        };
        let audited = required
            .ok()
            .flatten()
            .is_some_and(|permission| !permission.is_read() && permission != Permission::Locate);
        // Changes are recorded; so are calls a handler refuses (a device asking as another).
        let audit = self.audit.clone().map(|audit| {
            let slot = TargetSlot::default();
            if audited {
                request.extensions_mut().insert(slot.clone());
            }
            (
                audit,
                slot,
                crate::audit::trace_id(request.headers()),
                caller.clone(),
            )
        });
        request.extensions_mut().insert(caller);
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            if let Some((audit, slot, trace_id, caller)) = audit {
                // An error answers with its status in the headers; a success, in the trailers after the body.
                let code = response
                    .headers()
                    .get("grpc-status")
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.parse::<i32>().ok())
                    .map_or(tonic::Code::Ok, tonic::Code::from);
                let refused = matches!(
                    code,
                    tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
                );
                if audited || refused {
                    let event = AuditEvent {
                        time_ms: crate::clock::now_ms(),
                        principal: caller.describe(),
                        roles: role_keys(&caller.roles),
                        rpc: rpc_name(&path),
                        target: slot.get(),
                        code: crate::audit::code_name(code),
                        trace_id,
                    };
                    if refused {
                        audit.record_refusal(event);
                    } else {
                        audit.record(event);
                    }
                }
            }
            Ok(match recheck {
                Some(recheck) => response.map(|body| {
                    tonic::body::Body::new(RecheckedBody {
                        inner: body,
                        recheck,
                        ticks: None,
                        done: false,
                    })
                }),
                None => response,
            })
        })
    }
}

/// How often an answer that streams is decided again.
pub const RECHECK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// What deciding a call again needs.
struct Recheck {
    authorizer: Arc<Authorizer>,
    path: String,
    certificates: Arc<Vec<tonic::transport::CertificateDer<'static>>>,
}

/// A response body that, while it waits for its next frame, decides its call again every [`RECHECK_INTERVAL`]
/// and ends with the refusal's status when the caller may no longer make it. An answer that is ready at once (a
/// unary call) never starts the timer.
struct RecheckedBody {
    inner: tonic::body::Body,
    recheck: Recheck,
    ticks: Option<tokio::time::Interval>,
    done: bool,
}

impl http_body::Body for RecheckedBody {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        let this = &mut *self;
        let ticks = this.ticks.get_or_insert_with(|| {
            let mut ticks = tokio::time::interval_at(
                tokio::time::Instant::now() + RECHECK_INTERVAL,
                RECHECK_INTERVAL,
            );
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks
        });
        while ticks.poll_tick(cx).is_ready() {
            let recheck = &this.recheck;
            let required = crate::access::required(&recheck.path);
            let leaf = recheck.certificates.first().map(|der| der.as_ref());
            if let Err(refusal) = recheck.authorizer.authorize(&recheck.path, required, leaf) {
                tracing::info!(rpc = %recheck.path, reason = %refusal.status.message(), "stream ended: the caller may no longer make this call");
                this.done = true;
                // The refusal as tonic writes a status (grpc-message percent-encoded), as trailers.
                let mut trailers = refusal.status.into_http::<()>().into_parts().0.headers;
                trailers.remove(http::header::CONTENT_TYPE);
                return Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))));
            }
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }
}

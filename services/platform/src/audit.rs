//! The audit trail of a service: every call that changes something and every refused call, written by a
//! background writer in batches (a call never waits for the disk), refusals rate-limited so that a flood cannot
//! fill it, kept for a retention period, and listed by `AuditService`. Each service keeps its own table
//! `audit_events` (created by its migrations) and serves its own trail.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clouddp_core::page::Page;
use clouddp_proto::v1 as pb;
use sqlx::SqlitePool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::supervise::Heartbeat;

/// Events waiting for the writer; more are dropped (and counted).
pub const QUEUE: usize = 10_000;
/// Refused calls recorded per second, sustained.
pub const REFUSALS_PER_SECOND: f64 = 20.0;
/// Refused calls recorded in a burst.
pub const REFUSAL_BURST: f64 = 200.0;
/// The longest target kept.
pub const MAX_TARGET_CHARS: usize = 256;
/// The RPC name of the event that counts what a flood dropped.
pub const DROPPED_RPC: &str = "audit/dropped";

/// One audited call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// When it was answered.
    pub time_ms: i64,
    /// Who called.
    pub principal: String,
    /// Its roles.
    pub roles: Vec<String>,
    /// `Service/Method`.
    pub rpc: String,
    /// The id or name it named.
    pub target: String,
    /// The gRPC code of the answer, as its name (`OK`, `PERMISSION_DENIED`).
    pub code: String,
    /// The W3C trace id, when there was one.
    pub trace_id: String,
}

/// Where a handler names the target of its call (the layer reads it when the call is answered).
#[derive(Debug, Clone, Default)]
pub struct TargetSlot(Arc<Mutex<String>>);

impl TargetSlot {
    /// The target named so far.
    pub fn get(&self) -> String {
        self.0
            .lock()
            .map(|target| target.clone())
            .unwrap_or_default()
    }
}

/// Names `target` (an id or a name, never a secret) as what the call of `request` acts on.
pub fn target<T>(request: &tonic::Request<T>, target: &str) {
    if let Some(slot) = request.extensions().get::<TargetSlot>()
        && let Ok(mut slot) = slot.0.lock()
    {
        *slot = target.trim().chars().take(MAX_TARGET_CHARS).collect();
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The sending side: cheap to clone, never blocks.
#[derive(Clone)]
pub struct AuditTrail {
    sender: mpsc::Sender<AuditEvent>,
    refusals: Arc<Mutex<Bucket>>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for AuditTrail {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AuditTrail")
            .field("dropped", &self.dropped.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl AuditTrail {
    /// A trail and the writer that persists it into `pool`, pruning events older than `retention`.
    pub fn new(pool: SqlitePool, retention: Duration) -> (Self, Arc<AuditWriter>) {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let trail = Self {
            sender,
            refusals: Arc::new(Mutex::new(Bucket {
                tokens: REFUSAL_BURST,
                at: Instant::now(),
            })),
            dropped: dropped.clone(),
        };
        let writer = AuditWriter {
            pool,
            receiver: tokio::sync::Mutex::new(receiver),
            retention,
            dropped,
        };
        (trail, Arc::new(writer))
    }

    /// Records a change.
    pub fn record(&self, event: AuditEvent) {
        if self.sender.try_send(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records a refused call, unless refusals come faster than the rate allows (then only counted).
    pub fn record_refusal(&self, event: AuditEvent) {
        let allowed = self.refusals.lock().is_ok_and(|mut bucket| {
            let now = Instant::now();
            let refill = now.duration_since(bucket.at).as_secs_f64() * REFUSALS_PER_SECOND;
            bucket.tokens = (bucket.tokens + refill).min(REFUSAL_BURST);
            bucket.at = now;
            if bucket.tokens >= 1.0 {
                bucket.tokens -= 1.0;
                true
            } else {
                false
            }
        });
        if allowed {
            self.record(event);
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Persists the trail: batches of events, one event a second counting what was dropped, and hourly pruning.
pub struct AuditWriter {
    pool: SqlitePool,
    receiver: tokio::sync::Mutex<mpsc::Receiver<AuditEvent>>,
    retention: Duration,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for AuditWriter {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AuditWriter")
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

/// Events written in one transaction at most.
const BATCH: usize = 500;
/// How often old events are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

impl AuditWriter {
    /// Writes until `shutdown` (then drains what is queued).
    pub async fn run(
        self: Arc<Self>,
        shutdown: CancellationToken,
        heartbeat: Heartbeat,
    ) -> anyhow::Result<()> {
        let mut receiver = self.receiver.lock().await;
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pruned_at: Option<Instant> = None;
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => {
                    while let Ok(event) = receiver.try_recv() {
                        batch.push(event);
                    }
                    self.write(&batch).await?;
                    return Ok(());
                }
                received = receiver.recv_many(&mut batch, BATCH) => {
                    if received == 0 {
                        return Ok(());
                    }
                    self.write(&batch).await?;
                    batch.clear();
                }
                _ = ticks.tick() => {
                    self.write_dropped().await?;
                    if pruned_at.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                        self.prune().await?;
                        pruned_at = Some(Instant::now());
                    }
                }
            }
            heartbeat.ok();
        }
    }

    async fn write(&self, events: &[AuditEvent]) -> anyhow::Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut transaction = crate::db::write_transaction(&self.pool).await?;
        for event in events {
            sqlx::query(
                "INSERT INTO audit_events (time_ms, principal, roles, rpc, target, code, trace_id) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .bind(event.time_ms)
            .bind(&event.principal)
            .bind(event.roles.join(","))
            .bind(&event.rpc)
            .bind(&event.target)
            .bind(&event.code)
            .bind(&event.trace_id)
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    async fn write_dropped(&self) -> anyhow::Result<()> {
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped == 0 {
            return Ok(());
        }
        tracing::warn!(
            dropped,
            "audit events dropped: refused calls came faster than recorded"
        );
        self.write(&[AuditEvent {
            time_ms: crate::clock::now_ms(),
            principal: "site".to_owned(),
            roles: Vec::new(),
            rpc: DROPPED_RPC.to_owned(),
            target: format!("{dropped} event(s) not recorded"),
            code: "RESOURCE_EXHAUSTED".to_owned(),
            trace_id: String::new(),
        }])
        .await
    }

    async fn prune(&self) -> anyhow::Result<()> {
        let retention_ms = i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX);
        let cutoff = crate::clock::now_ms().saturating_sub(retention_ms);
        let removed = sqlx::query("DELETE FROM audit_events WHERE time_ms < ?1")
            .bind(cutoff)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if removed > 0 {
            tracing::info!(removed, "pruned audit events past their retention");
        }
        Ok(())
    }
}

/// Which events to list.
#[derive(Debug, Clone)]
pub struct AuditQuery {
    /// Only this principal's.
    pub principal: Option<String>,
    /// Only this RPC's (`Service/Method`, or a method alone).
    pub rpc: Option<String>,
    /// Only refusals.
    pub refused_only: bool,
    /// Only at or after this time.
    pub since_ms: Option<i64>,
    /// The page.
    pub page: Page,
}

/// A stored event and its sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Its sequence.
    pub sequence: i64,
    /// The event.
    pub event: AuditEvent,
}

fn stored_event(row: &sqlx::sqlite::SqliteRow) -> sqlx::Result<StoredEvent> {
    use sqlx::Row as _;
    let roles: String = row.try_get("roles")?;
    Ok(StoredEvent {
        sequence: row.try_get("sequence")?,
        event: AuditEvent {
            time_ms: row.try_get("time_ms")?,
            principal: row.try_get("principal")?,
            roles: roles
                .split(',')
                .filter(|role| !role.is_empty())
                .map(str::to_owned)
                .collect(),
            rpc: row.try_get("rpc")?,
            target: row.try_get("target")?,
            code: row.try_get("code")?,
            trace_id: row.try_get("trace_id")?,
        },
    })
}

/// Events matching `query`, newest first, and the next page's token.
pub async fn list(
    pool: &SqlitePool,
    query: &AuditQuery,
) -> sqlx::Result<(Vec<StoredEvent>, String)> {
    let before: i64 = query
        .page
        .after()
        .and_then(|after| after.parse().ok())
        .unwrap_or(i64::MAX);
    let limit = i64::try_from(query.page.size()).unwrap_or(1000) + 1;
    let rpc = query.rpc.as_deref().map(|rpc| {
        if rpc.contains('/') {
            rpc.to_owned()
        } else {
            format!("%/{rpc}")
        }
    });
    let rows = sqlx::query(
        "SELECT sequence, time_ms, principal, roles, rpc, target, code, trace_id FROM audit_events \
         WHERE sequence < ?1 AND (?2 IS NULL OR principal = ?2) AND (?3 IS NULL OR rpc LIKE ?3) \
         AND (?4 = 0 OR code IN ('UNAUTHENTICATED', 'PERMISSION_DENIED')) AND (?5 IS NULL OR time_ms >= ?5) \
         ORDER BY sequence DESC LIMIT ?6",
    )
    .bind(before)
    .bind(query.principal.as_deref())
    .bind(rpc)
    .bind(query.refused_only)
    .bind(query.since_ms)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let mut events = rows
        .iter()
        .map(stored_event)
        .collect::<sqlx::Result<Vec<StoredEvent>>>()?;
    let next = if events.len() > query.page.size() {
        events.truncate(query.page.size());
        events
            .last()
            .map(|last| Page::token_after(&last.sequence.to_string()))
            .unwrap_or_default()
    } else {
        String::new()
    };
    Ok((events, next))
}

/// `AuditService` over a service's trail.
#[derive(Debug, Clone)]
pub struct AuditGrpc {
    pool: SqlitePool,
}

impl AuditGrpc {
    /// The service over the trail in `pool`.
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }
}

fn filter(value: &str, field: &'static str) -> Result<Option<String>, tonic::Status> {
    let value = value.trim();
    if value.len() > 256 {
        return Err(tonic::Status::invalid_argument(format!(
            "{field}: at most 256 characters"
        )));
    }
    Ok((!value.is_empty()).then(|| value.to_owned()))
}

#[tonic::async_trait]
impl pb::audit_service_server::AuditService for AuditGrpc {
    async fn list_audit_events(
        &self,
        request: tonic::Request<pb::ListAuditEventsRequest>,
    ) -> Result<tonic::Response<pb::ListAuditEventsResponse>, tonic::Status> {
        let request = request.into_inner();
        let (size, token) = request
            .page
            .as_ref()
            .map(|page| (page.page_size, page.page_token.as_str()))
            .unwrap_or((0, ""));
        let page = Page::from_request(size, token)
            .map_err(|error| tonic::Status::invalid_argument(error.to_string()))?;
        let since_ms = request
            .since
            .as_ref()
            .map(clouddp_proto::convert::ms_from_timestamp);
        let query = AuditQuery {
            principal: filter(&request.principal, "principal")?,
            rpc: filter(&request.rpc, "rpc")?,
            refused_only: request.refused_only,
            since_ms,
            page,
        };
        let (events, next_page_token) = list(&self.pool, &query).await.map_err(|error| {
            match crate::db::transient_reason(&error) {
                Some(reason) => tonic::Status::unavailable(reason),
                None => tonic::Status::internal(format!("audit trail: {error}")),
            }
        })?;
        Ok(tonic::Response::new(pb::ListAuditEventsResponse {
            events: events
                .into_iter()
                .map(|stored| pb::AuditEvent {
                    sequence: u64::try_from(stored.sequence).unwrap_or_default(),
                    time: Some(clouddp_proto::convert::timestamp_from_ms(
                        stored.event.time_ms,
                    )),
                    principal: stored.event.principal,
                    roles: stored.event.roles,
                    rpc: stored.event.rpc,
                    target: stored.event.target,
                    code: stored.event.code,
                    trace_id: stored.event.trace_id,
                })
                .collect(),
            next_page_token,
        }))
    }
}

/// The W3C trace id of a request: from its `traceparent` header when it carries one.
pub fn trace_id(headers: &http::HeaderMap) -> String {
    headers
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split('-').nth(1))
        .filter(|id| id.len() == 32 && id.bytes().all(|byte| byte.is_ascii_hexdigit()))
        .map(str::to_owned)
        .unwrap_or_default()
}

/// The name of a gRPC code as the audit trail writes it.
pub fn code_name(code: tonic::Code) -> String {
    let debug = format!("{code:?}");
    let mut name = String::with_capacity(debug.len() + 4);
    for (index, character) in debug.chars().enumerate() {
        if character.is_ascii_uppercase() && index > 0 {
            name.push('_');
        }
        name.push(character.to_ascii_uppercase());
    }
    match code {
        tonic::Code::Ok => "OK".to_owned(),
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_named_as_grpc_names_them() {
        assert_eq!(code_name(tonic::Code::Ok), "OK");
        assert_eq!(
            code_name(tonic::Code::PermissionDenied),
            "PERMISSION_DENIED"
        );
        assert_eq!(code_name(tonic::Code::Unauthenticated), "UNAUTHENTICATED");
        assert_eq!(
            code_name(tonic::Code::FailedPrecondition),
            "FAILED_PRECONDITION"
        );
    }

    #[test]
    fn a_trace_id_comes_only_from_a_well_formed_traceparent() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(trace_id(&headers), "");
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        assert_eq!(trace_id(&headers), "4bf92f3577b34da6a3ce929d0e0e4736");
        headers.insert(
            "traceparent",
            "00-nothex-00f067aa0ba902b7-01".parse().unwrap(),
        );
        assert_eq!(trace_id(&headers), "");
    }

    #[tokio::test]
    async fn a_flood_of_refusals_is_recorded_up_to_the_burst_and_the_rest_counted() {
        let pool = SqlitePool::connect("sqlite::memory:").await.unwrap();
        let (trail, _writer) = AuditTrail::new(pool, Duration::from_secs(60));
        let event = AuditEvent {
            time_ms: 0,
            principal: "unauthenticated".to_owned(),
            roles: Vec::new(),
            rpc: "X/Y".to_owned(),
            target: String::new(),
            code: "UNAUTHENTICATED".to_owned(),
            trace_id: String::new(),
        };
        for _ in 0..1000 {
            trail.record_refusal(event.clone());
        }
        let dropped = trail.dropped.load(Ordering::Relaxed);
        assert!((790..=800).contains(&dropped), "{dropped}");
    }
}

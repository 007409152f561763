//! Monitoring's side of access control: its service credential (written by the distribution manager's first
//! start), and the administrators' role bindings and revoked credentials, read from the distribution manager
//! every half second so that a revoked role or credential is refused here within a second too.

use std::sync::Arc;
use std::time::Duration;

use clouddp_platform::access::Role;
use clouddp_platform::authorize::RoleBindings;
use clouddp_platform::supervise::Heartbeat;
use clouddp_proto::v1::access_service_client::AccessServiceClient;
use clouddp_proto::v1::{ListAdminCredentialsRequest, ListRoleBindingsRequest};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// How often the role bindings are read.
pub const REFRESH_INTERVAL: Duration = Duration::from_millis(500);

/// Keeps `bindings` in step with the distribution manager's until `shutdown`.
pub async fn follow_bindings(
    channel: Channel,
    bindings: Arc<RoleBindings>,
    shutdown: CancellationToken,
    heartbeat: Heartbeat,
) -> anyhow::Result<()> {
    let mut client = AccessServiceClient::new(channel);
    let mut ticks = tokio::time::interval(REFRESH_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = ticks.tick() => {}
        }
        let answer = client
            .list_role_bindings(ListRoleBindingsRequest::default())
            .await
            .map_err(|status| {
                anyhow::anyhow!(
                    "cannot read the role bindings from the distribution manager ({:?}): {}",
                    status.code(),
                    status.message()
                )
            })?
            .into_inner();
        bindings.replace(answer.bindings.into_iter().filter_map(|binding| {
            let name = binding.principal.strip_prefix("admin/")?.to_owned();
            Some((name, Role::parse(&binding.role)?))
        }));
        let revoked = client
            .list_admin_credentials(ListAdminCredentialsRequest {
                revoked_only: true,
                ..Default::default()
            })
            .await
            .map_err(|status| {
                anyhow::anyhow!(
                    "cannot read the revoked credentials from the distribution manager ({:?}): {}",
                    status.code(),
                    status.message()
                )
            })?
            .into_inner();
        bindings.replace_revoked(
            revoked
                .credentials
                .into_iter()
                .map(|credential| credential.serial),
        );
        heartbeat.ok();
    }
}

//! The keys that sign access tokens: one current key signs, every key younger than the longest token lifetime
//! past its retirement still verifies, so a rotation never breaks a download in flight.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use clouddp_core::token::{self, Claims, SigningKey};
use clouddp_platform::clock::now_ms;
use sqlx::{Row, SqlitePool};

use crate::error::{DmError, DmResult};
use crate::keys::SiteKey;

/// A public key as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// The `kid`.
    pub id: String,
    /// 32 bytes.
    pub public_key: Vec<u8>,
    /// When it became current, ms.
    pub create_time_ms: i64,
    /// Signs new tokens.
    pub current: bool,
}

#[derive(Debug, Default)]
struct Loaded {
    current: Option<Arc<SigningKey>>,
    public: HashMap<String, Vec<u8>>,
    listed: Vec<PublicKey>,
}

/// Claims waiting to be signed together, each with where its token goes.
type Pending = Vec<(Claims, tokio::sync::oneshot::Sender<Result<String, String>>)>;

/// The batch being gathered: its claims, and whether a signer task is already on its way for them.
#[derive(Debug, Default)]
struct Batch {
    pending: Pending,
    signer: bool,
}

/// The site's token keys.
#[derive(Debug, Clone)]
pub struct TokenKeys {
    pool: SqlitePool,
    site_key: Arc<SiteKey>,
    loaded: Arc<RwLock<Loaded>>,
    batch: Arc<std::sync::Mutex<Batch>>,
}

fn internal(error: impl std::fmt::Display) -> DmError {
    DmError::Internal(error.to_string())
}

impl TokenKeys {
    /// The keys in `pool`, loaded; a first key is made when there is none and `create` is set.
    pub async fn open(pool: SqlitePool, site_key: Arc<SiteKey>, create: bool) -> DmResult<Self> {
        let keys = Self {
            pool,
            site_key,
            loaded: Arc::default(),
            batch: Arc::default(),
        };
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM signing_keys")
            .fetch_one(&keys.pool)
            .await?;
        if count == 0 && create {
            keys.rotate().await?;
        } else {
            keys.reload().await?;
        }
        Ok(keys)
    }

    /// Makes a new current key; the previous ones keep verifying.
    pub async fn rotate(&self) -> DmResult<PublicKey> {
        let id = format!("k{}", uuid::Uuid::now_v7().simple());
        let (key, pkcs8) = SigningKey::generate(&id).map_err(internal)?;
        let sealed = self.site_key.wrap(&pkcs8, &id)?;
        let mut transaction = clouddp_platform::db::write_transaction(&self.pool).await?;
        sqlx::query("UPDATE signing_keys SET current = 0")
            .execute(&mut *transaction)
            .await?;
        sqlx::query(
            "INSERT INTO signing_keys (id, public_key, sealed_private, create_time_ms, current) VALUES (?1, ?2, ?3, ?4, 1)",
        )
        .bind(&id)
        .bind(key.public_key())
        .bind(sealed)
        .bind(now_ms())
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        tracing::info!(key.id = %id, "token signing key rotated");
        self.reload().await?;
        self.list()
            .into_iter()
            .find(|listed| listed.id == id)
            .ok_or_else(|| internal("the new key is missing"))
    }

    /// Reloads the keys from the database (another process may have rotated them).
    pub async fn reload(&self) -> DmResult<()> {
        let rows =
            sqlx::query("SELECT * FROM signing_keys ORDER BY current DESC, create_time_ms DESC")
                .fetch_all(&self.pool)
                .await?;
        let now = now_ms();
        let mut loaded = Loaded::default();
        // A key stops verifying once every token it could have signed has expired: the lifetime after the
        // next key became current, plus the clock skew.
        let mut successor_time: Option<i64> = None;
        for row in &rows {
            let id: String = row.try_get("id")?;
            let current: bool = row.try_get("current")?;
            let created: i64 = row.try_get("create_time_ms")?;
            let public: Vec<u8> = row.try_get("public_key")?;
            let retired_long_ago = successor_time
                .is_some_and(|next| now > next + token::MAX_LIFETIME_MS + token::SKEW_MS);
            if current {
                let pkcs8 = self
                    .site_key
                    .unwrap(&row.try_get::<Vec<u8>, _>("sealed_private")?, &id)?;
                loaded.current = Some(Arc::new(
                    SigningKey::from_pkcs8(&id, &pkcs8).map_err(internal)?,
                ));
            }
            if current || !retired_long_ago {
                loaded.public.insert(id.clone(), public.clone());
                loaded.listed.push(PublicKey {
                    id,
                    public_key: public,
                    create_time_ms: created,
                    current,
                });
            }
            successor_time = Some(created);
        }
        *self.loaded.write().map_err(internal)? = loaded;
        Ok(())
    }

    /// The keys that verify tokens, the current one first.
    pub fn list(&self) -> Vec<PublicKey> {
        self.loaded
            .read()
            .map(|loaded| loaded.listed.clone())
            .unwrap_or_default()
    }

    /// How many keys the database holds and the newest one's time: a change means a reload is due.
    pub async fn fingerprint(&self) -> DmResult<(i64, i64)> {
        Ok(
            sqlx::query_as("SELECT COUNT(*), COALESCE(MAX(create_time_ms), 0) FROM signing_keys")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Signs `claims` together with those of the calls asking at the same moment: the first of them starts a
    /// signer task, which lets the tasks ready to run add theirs (it yields once, no timer) and then signs them
    /// all with one signature (`cdp2` batch tokens; a batch of one is a `cdp1` token). Under load this removes
    /// most of the Ed25519 signatures, a third of LocateContent's CPU; alone, a call waits only for one yield
    /// (two yields gathered more but tripled LocateContent's p99 at half load). The signer is its own task, so
    /// a caller that goes away never strands the others.
    pub async fn sign_batched(&self, claims: Claims) -> DmResult<String> {
        // Refused here, with its own error, rather than in the signer task.
        self.current()?;
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let start_signer = {
            let mut batch = self.batch.lock().map_err(internal)?;
            batch.pending.push((claims, sender));
            !std::mem::replace(&mut batch.signer, true)
        };
        if start_signer {
            let keys = self.clone();
            tokio::spawn(async move {
                tokio::task::yield_now().await;
                keys.sign_pending();
            });
        }
        receiver.await.map_err(internal)?.map_err(DmError::Internal)
    }

    /// The key that signs new tokens.
    fn current(&self) -> DmResult<Arc<SigningKey>> {
        self.loaded
            .read()
            .map_err(internal)?
            .current
            .clone()
            .ok_or_else(|| DmError::Precondition("no token signing key yet".to_owned()))
    }

    /// Signs what is pending and hands each caller its token.
    fn sign_pending(&self) {
        let pending = match self.batch.lock() {
            Ok(mut batch) => {
                batch.signer = false;
                std::mem::take(&mut batch.pending)
            }
            Err(_) => return,
        };
        let (claims, senders): (Vec<Claims>, Vec<_>) = pending.into_iter().unzip();
        let tokens = self
            .current()
            .map_err(|error| error.to_string())
            .and_then(|key| key.sign_batch(claims).map_err(|error| error.to_string()));
        match tokens {
            Ok(tokens) => {
                for (sender, token) in senders.into_iter().zip(tokens) {
                    let _ = sender.send(Ok(token));
                }
            }
            Err(error) => {
                for sender in senders {
                    let _ = sender.send(Err(error.clone()));
                }
            }
        }
    }

    /// Verifies a token offline.
    pub fn verify(
        &self,
        token: &str,
        now: i64,
        scope: token::Scope<'_>,
    ) -> Result<Claims, token::TokenError> {
        let loaded = self
            .loaded
            .read()
            .map_err(|_| token::TokenError::UnknownKey)?;
        token::verify(
            token,
            |kid| loaded.public.get(kid).map(Vec::as_slice),
            now,
            scope,
        )
    }
}

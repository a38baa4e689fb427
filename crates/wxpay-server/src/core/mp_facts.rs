//! What this instance remembers of WeChat's answers about each mini program, so that shipping
//! does not ask WeChat every time: the express companies it takes (`get_delivery_list`, kept
//! [`DELIVERY_LIST_TTL`]) and whether it is under trade management (`is_trade_managed`, kept
//! [`TRADE_MANAGED_TTL`]). In memory, by appid, shared by the requests and the jobs through the
//! [`crate::registry::Registry`]. A question that fails keeps the last answer, however old,
//! when there is one; without one the failure is returned (the caller decides, never guesses).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use wxpay::mp::MpClient;
use wxpay::mp::shipping::DeliveryCompany;

/// How long an express company list is used before WeChat is asked again: 12 hours.
pub const DELIVERY_LIST_TTL: Duration = Duration::from_secs(12 * 3600);

/// How long an `is_trade_managed` answer is used before WeChat is asked again: an hour.
pub const TRADE_MANAGED_TTL: Duration = Duration::from_secs(3600);

#[derive(Clone, Debug)]
struct Cached<T> {
    value: T,
    at: Instant,
}

type Cache<T> = Mutex<HashMap<String, Cached<T>>>;

/// The cached answers, by appid.
#[derive(Debug, Default)]
pub struct MpFacts {
    delivery: Cache<Arc<Vec<DeliveryCompany>>>,
    managed: Cache<bool>,
}

/// The fresh cached value, else the value of `ask` (kept), else a stale cached value, else the
/// failure.
async fn cached<T, F>(
    cache: &Cache<T>,
    appid: &str,
    ttl: Duration,
    ask: F,
) -> Result<T, wxpay::Error>
where
    T: Clone,
    F: Future<Output = Result<T, wxpay::Error>>,
{
    let known = cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(appid)
        .cloned();
    if let Some(c) = &known
        && c.at.elapsed() < ttl
    {
        return Ok(c.value.clone());
    }
    match ask.await {
        Ok(value) => {
            cache.lock().unwrap_or_else(PoisonError::into_inner).insert(
                appid.to_owned(),
                Cached {
                    value: value.clone(),
                    at: Instant::now(),
                },
            );
            Ok(value)
        }
        Err(e) => match known {
            Some(c) => {
                tracing::warn!(%appid, error = %e, "WeChat not asked again; using the last answer");
                Ok(c.value)
            }
            None => Err(e),
        },
    }
}

impl MpFacts {
    /// The express companies of the mini program of `mp` (WeChat's `delivery_id`s).
    ///
    /// # Errors
    /// WeChat's failure, when it cannot be asked and no list was ever received (an empty list
    /// counts as a failure: it is not kept).
    pub async fn delivery_companies(
        &self,
        mp: &MpClient,
    ) -> Result<Arc<Vec<DeliveryCompany>>, wxpay::Error> {
        cached(&self.delivery, mp.appid(), DELIVERY_LIST_TTL, async {
            let list = mp.get_delivery_list().await?;
            if list.is_empty() {
                return Err(wxpay::Error::Decode(wxpay::DecodeError::MissingField(
                    "delivery_list (no express company)".into(),
                )));
            }
            Ok(Arc::new(list))
        })
        .await
    }

    /// Whether the mini program of `mp` is under trade management (小程序发货信息管理服务).
    ///
    /// # Errors
    /// WeChat's failure, when it cannot be asked and never answered.
    pub async fn is_trade_managed(&self, mp: &MpClient) -> Result<bool, wxpay::Error> {
        cached(
            &self.managed,
            mp.appid(),
            TRADE_MANAGED_TTL,
            mp.is_trade_managed(),
        )
        .await
    }
}

//! Message push (消息推送) of each mini program: its settings (the Token and EncodingAESKey set
//! in the mini program's admin console, sealed under the master key and bound to the appid),
//! and the trade-management events (小程序发货信息管理服务) WeChat pushes: verified, decrypted
//! by the library (`wxpay::mp::push`), then applied once ([`Store::apply_push`]).
//!
//! Each event's dedupe key names what it says, not when it was sent, so that a duplicate or a
//! retry of the same push, and the reconcile job learning the same fact by asking WeChat,
//! change nothing the second time: `settled:{transaction_id}` for a settlement,
//! `shipped:{transaction_id}` for WeChat seeing the shipping, the event and its `CreateTime`
//! for reminders and alerts.

use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;
use wxpay::mp::push::{EncodingAesKey, PushConfig, PushEvent, PushMessage};

use crate::sealing::{self, MasterKey};
use crate::store::{PushApplied, Store, StoreError, TradeChange};

use super::tenants::TenantError;

/// The additional data a mini program's sealed push settings are bound to.
#[must_use]
pub fn push_settings_aad(appid: &str) -> String {
    format!("mini_programs.push_settings:{appid}")
}

#[derive(Serialize, Deserialize)]
struct Settings {
    token: String,
    encoding_aes_key: Option<String>,
}

/// Seals a mini program's push settings after checking them: a Token of 3 to 32 letters and
/// digits (as the admin console requires), an EncodingAESKey of 43 base64 characters when
/// given.
///
/// # Errors
/// [`TenantError::Invalid`] naming the field, [`TenantError::Seal`].
pub fn seal_settings(
    key: &MasterKey,
    appid: &str,
    token: &SecretString,
    encoding_aes_key: Option<&SecretString>,
) -> Result<String, TenantError> {
    let token = token.expose_secret();
    if !(3..=32).contains(&token.len()) || !token.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(TenantError::Invalid(
            "push_token: 3 to 32 letters and digits".into(),
        ));
    }
    let aes = encoding_aes_key.map(|k| k.expose_secret().to_owned());
    if let Some(aes) = &aes {
        EncodingAesKey::parse(aes).map_err(|_| {
            TenantError::Invalid("push_encoding_aes_key: 43 characters of base64".into())
        })?;
    }
    let plain = serde_json::to_vec(&Settings {
        token: token.to_owned(),
        encoding_aes_key: aes,
    })
    .map_err(|e| TenantError::Invalid(format!("push settings: {e}")))?;
    Ok(sealing::seal(key, &push_settings_aad(appid), &plain)?)
}

/// Why a push cannot be checked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushSetupError {
    /// No such mini program, or it has no push settings.
    #[error("mini program {0} receives no message push here")]
    NotConfigured(String),
    /// The settings do not open (another master key, or none).
    #[error("the push settings of mini program {0} cannot be opened")]
    Unreadable(String),
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The push configuration of a mini program (read at every push: a change is seen at once on
/// every instance).
///
/// # Errors
/// [`PushSetupError`].
pub async fn push_config(
    store: &Store,
    key: Option<&MasterKey>,
    appid: &str,
) -> Result<PushConfig, PushSetupError> {
    let sealed = store
        .mini_program(appid)
        .await?
        .and_then(|a| a.push_settings)
        .ok_or_else(|| PushSetupError::NotConfigured(appid.to_owned()))?;
    let key = key.ok_or_else(|| PushSetupError::Unreadable(appid.to_owned()))?;
    let plain = sealing::open(key, &push_settings_aad(appid), &sealed)
        .map_err(|_| PushSetupError::Unreadable(appid.to_owned()))?;
    let settings: Settings = serde_json::from_slice(plain.expose_secret())
        .map_err(|_| PushSetupError::Unreadable(appid.to_owned()))?;
    match &settings.encoding_aes_key {
        Some(aes) => PushConfig::encrypted(settings.token.clone(), aes, appid)
            .map_err(|_| PushSetupError::Unreadable(appid.to_owned())),
        None => Ok(PushConfig::plaintext(settings.token.clone(), appid)),
    }
}

/// Unix seconds to milliseconds.
fn ms(seconds: i64) -> i64 {
    seconds.saturating_mul(1000)
}

/// What a verified push means for this server: its dedupe key, event name and change. An order
/// event names the order by `merchant_trade_no`; it is believed only for an order of this mini
/// program with the same transaction id (another is recorded as seen and changes nothing).
async fn change_of(
    store: &Store,
    appid: &str,
    message: &PushMessage,
) -> Result<(String, String, TradeChange), StoreError> {
    let ours = |order: &wxpay::mp::push::PushOrder| {
        let order = order.clone();
        async move {
            let found = store.order(&order.merchant_trade_no).await?;
            Ok::<_, StoreError>(found.filter(|o| {
                o.appid == appid && o.transaction_id.as_deref() == Some(&order.transaction_id)
            }))
        }
    };
    let at = message.create_time;
    Ok(match &message.event {
        PushEvent::TradeManageOrderSettlement {
            order,
            shipped_time,
            estimated_settlement_time,
            confirm_receive_method,
            confirm_receive_time,
            settlement_time,
        } => {
            let detail = json!({
                "event": "trade_manage_order_settlement",
                "transaction_id": order.transaction_id,
                "shipped_time": shipped_time,
                "estimated_settlement_time": estimated_settlement_time,
                "confirm_receive_method": confirm_receive_method.map(|m| m.0),
                "confirm_receive_time": confirm_receive_time,
                "settlement_time": settlement_time,
                "via": "message push",
            });
            let name = "trade_manage_order_settlement".to_owned();
            let Some(found) = ours(order).await? else {
                return Ok((
                    format!("{appid}:unknown:{}:{at}", order.transaction_id),
                    name,
                    TradeChange::Nothing,
                ));
            };
            match settlement_time {
                Some(settled) => (
                    settled_key(&order.transaction_id),
                    name,
                    TradeChange::Settled {
                        out_trade_no: found.out_trade_no,
                        received_at: ms(confirm_receive_time.unwrap_or(*settled)),
                        settled_at: ms(*settled),
                        detail,
                    },
                ),
                None => (
                    format!("shipped:{}", order.transaction_id),
                    name,
                    TradeChange::Timeline {
                        out_trade_no: found.out_trade_no,
                        detail,
                    },
                ),
            }
        }
        PushEvent::TradeManageRemindShipping { order, msg } => {
            let name = "trade_manage_remind_shipping".to_owned();
            match ours(order).await? {
                Some(found) => (
                    format!("remind:{}:{at}", order.transaction_id),
                    name.clone(),
                    TradeChange::Timeline {
                        out_trade_no: found.out_trade_no,
                        detail: json!({"event": name, "msg": msg, "via": "message push"}),
                    },
                ),
                None => (
                    format!("{appid}:unknown:{}:{at}", order.transaction_id),
                    name,
                    TradeChange::Nothing,
                ),
            }
        }
        PushEvent::WxaTradeControlled { msg } => (
            format!("{appid}:wxa_trade_controlled:{at}"),
            "wxa_trade_controlled".to_owned(),
            TradeChange::Alert {
                kind: "wxa_trade_controlled".into(),
                appid: appid.to_owned(),
                message: msg.clone().unwrap_or_else(|| {
                    "WeChat restricted this mini program's payments (wxa_trade_controlled)".into()
                }),
            },
        ),
        PushEvent::TradeManageRemindAccessApi { .. } => (
            format!("{appid}:trade_manage_remind_access_api:{at}"),
            "trade_manage_remind_access_api".to_owned(),
            TradeChange::Nothing,
        ),
        _ => (
            format!("{appid}:other:{at}:{}", message.from_user_name),
            "other".to_owned(),
            TradeChange::Nothing,
        ),
    })
}

/// The dedupe key of an order's settlement, whether a push or the reconcile job learned it.
#[must_use]
pub fn settled_key(transaction_id: &str) -> String {
    format!("settled:{transaction_id}")
}

/// Applies a verified push of `appid` once. Events about orders that are not this mini
/// program's are recorded as seen and change nothing; `wxa_trade_controlled` raises an alert
/// (logged at error and counted).
///
/// # Errors
/// [`StoreError`].
pub async fn apply(
    store: &Store,
    appid: &str,
    message: &PushMessage,
) -> Result<PushApplied, StoreError> {
    let (dedupe_key, event, change) = change_of(store, appid, message).await?;
    let applied = store
        .apply_push(&dedupe_key, appid, &event, &change)
        .await?;
    let result = match &applied {
        PushApplied::Duplicate => "duplicate",
        PushApplied::Applied(_) => "applied",
    };
    if let (TradeChange::Alert { message, .. }, PushApplied::Applied(_)) = (&change, &applied) {
        tracing::error!(appid = %appid, alert = %message, "WeChat restricted the mini program's payments (wxa_trade_controlled)");
        crate::metrics::trade_controlled();
    }
    if matches!(change, TradeChange::Nothing) && event != "trade_manage_remind_access_api" {
        tracing::warn!(appid = %appid, event = %event, "a push about no order of this mini program: recorded, nothing changed");
    }
    crate::metrics::push(&event, result);
    Ok(applied)
}

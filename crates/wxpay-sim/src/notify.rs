//! Notification delivery: payment and refund notifications POSTed to the merchant's
//! `notify_url`, retried on WeChat's schedule (divided by the time scale) until acknowledged,
//! with the injected faults (drop, duplicate, delay, SIGNTEST probe), and logged for `/sim/`.
//!
//! v2 acknowledgements are `<xml><return_code>SUCCESS</return_code>...` with HTTP 200; v3
//! acknowledgements are HTTP 200 or 204, whatever the body (§A.10, §B.15).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde_json::json;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;
use wxpay::nonce::Clock as _;

use crate::app::{AppState, scale};
use crate::faults::{FaultState, jitter, roll};
use crate::signer::{PlatformSigner, SigningKey, request_id};
use crate::state::{ApiVersion, Order, Refund, RefundStatus, SimClock, rfc3339_cst, v2_time};

/// WeChat's retry intervals after a failed attempt, in seconds:
/// 15s/15s/30s/3m/10m/20m/30m/30m/30m/60m/3h/3h/3h/6h/6h (24h4m in all).
pub const RETRY_SCHEDULE_SECS: [u64; 15] = [
    15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10800, 10800, 10800, 21600, 21600,
];

/// How long the simulator waits for the merchant's answer (WeChat expects one within 5 s).
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);

const MAX_CONCURRENT_SENDS: usize = 64;

/// How many finished deliveries keep their body and headers in the log. Older ones keep their
/// attempts (times, statuses, acks) but not the bytes, so that a million notifications do not
/// hold gigabytes.
pub const FULL_RECORDS_KEPT: usize = 10_000;

/// What a notification is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryKind {
    /// A payment (`TRANSACTION.SUCCESS` / v2 pay notification).
    Payment,
    /// A refund (`REFUND.SUCCESS` / v2 refund notification).
    Refund,
    /// A merchant transfer bill that reached a final state (`MCHTRANSFER.BILL.FINISHED`); its
    /// `out_bill_no` is logged as `out_trade_no`.
    Transfer,
    /// A transfer authorization confirmed or closed (`MCHTRANSFER.AUTHORIZATION.*`); its
    /// `out_authorization_no` is logged as `out_trade_no`.
    TransferAuthorization,
}

/// How each attempt of a delivery is signed.
#[derive(Clone, Debug)]
pub enum DeliverySigning {
    /// The body is complete as it is (v2: signed inside the XML, or encrypted `req_info`).
    None,
    /// v3: `Wechatpay-*` headers made fresh for every attempt with this key of this merchant's
    /// signer.
    V3(SigningKey, Arc<PlatformSigner>),
}

/// A notification to deliver.
#[derive(Clone, Debug)]
pub struct NewDelivery {
    /// Payment or refund.
    pub kind: DeliveryKind,
    /// v2 or v3 (decides what counts as an acknowledgement).
    pub version: ApiVersion,
    /// The merchant's `notify_url`.
    pub url: String,
    /// The exact body.
    pub body: Bytes,
    /// `Content-Type` of the body.
    pub content_type: &'static str,
    /// How attempts are signed.
    pub signing: DeliverySigning,
    /// The order.
    pub out_trade_no: String,
    /// The refund, for refund notifications.
    pub out_refund_no: Option<String>,
    /// The v3 event id (`EV-...`).
    pub event_id: Option<String>,
}

/// One send (or non-send) of a delivery.
#[derive(Clone, Debug, Serialize)]
pub struct Attempt {
    /// 0 for the first attempt, then the retry number.
    pub number: usize,
    /// When (simulated time, RFC 3339 GMT+8).
    pub at: String,
    /// `sent`, `dropped` (fault: not sent), `failed` (no answer: connection error or timeout).
    pub outcome: &'static str,
    /// The HTTP status answered.
    pub status: Option<u16>,
    /// Whether this send was acknowledged.
    pub acked: bool,
    /// A second copy sent by the duplicate fault.
    pub duplicate: bool,
    /// A `WECHATPAY/SIGNTEST/` probe (its answer never counts as acknowledgement).
    pub probe: bool,
    /// `Wechatpay-Serial` of a v3 send.
    pub serial: Option<String>,
    /// The headers sent (`Content-Type` and, for v3, the `Wechatpay-*` signature headers).
    pub headers: BTreeMap<String, String>,
    /// The transport error, if any.
    pub error: Option<String>,
}

/// One notification and everything that happened to it.
#[derive(Clone, Debug, Serialize)]
pub struct DeliveryRecord {
    /// Sequence number, from 1.
    pub id: u64,
    /// Payment or refund.
    pub kind: DeliveryKind,
    /// `v2` or `v3`.
    pub version: &'static str,
    /// Target URL.
    pub url: String,
    /// The order.
    pub out_trade_no: String,
    /// The refund.
    pub out_refund_no: Option<String>,
    /// The v3 event id.
    pub event_id: Option<String>,
    /// The body as sent (v3: the encrypted envelope; no secret is in it).
    pub body: String,
    /// Every attempt.
    pub attempts: Vec<Attempt>,
    /// Whether an attempt was acknowledged (retries stopped).
    pub acked: bool,
    /// Whether all retries failed.
    pub gave_up: bool,
    /// Retries used so far.
    pub retries: usize,
    /// Whether the body and the attempt headers were dropped to bound memory (only finished
    /// deliveries older than the latest [`FULL_RECORDS_KEPT`] are pruned).
    pub pruned: bool,
}

struct Entry {
    record: DeliveryRecord,
    body: Bytes,
    content_type: &'static str,
    signing: DeliverySigning,
    next_due: Option<Instant>,
    in_flight: bool,
}

#[derive(Default)]
struct Queue {
    entries: Vec<Entry>,
    due: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Finished deliveries whose body and headers are still kept, oldest first.
    finished: VecDeque<usize>,
}

/// What a flush did.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct FlushSummary {
    /// Deliveries attempted by this flush.
    pub attempted: usize,
    /// Of those, acknowledged now.
    pub acked: usize,
    /// Deliveries still waiting for an acknowledgement (not given up).
    pub pending: usize,
}

/// The notification dispatcher: one queue, one scheduler task, bounded concurrent sends.
pub struct Dispatcher {
    queue: Mutex<Queue>,
    wake: Notify,
    idle: Notify,
    client: reqwest::Client,
    time_scale: f64,
    faults: Arc<FaultState>,
    clock: Arc<SimClock>,
    sends: Arc<Semaphore>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("time_scale", &self.time_scale)
            .finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// A dispatcher. Start its scheduler with [`Dispatcher::run`].
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(
        time_scale: f64,
        faults: Arc<FaultState>,
        clock: Arc<SimClock>,
    ) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(ACK_TIMEOUT)
            .connect_timeout(Duration::from_secs(3))
            .user_agent("Mozilla/4.0")
            .no_proxy()
            .build()
            .map_err(|e| format!("notification HTTP client: {e}"))?;
        Ok(Self {
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            idle: Notify::new(),
            client,
            time_scale,
            faults,
            clock,
            sends: Arc::new(Semaphore::new(MAX_CONCURRENT_SENDS)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues a notification; its first attempt is made at once. Returns its id.
    pub fn enqueue(&self, d: NewDelivery) -> u64 {
        let mut q = self.lock();
        let index = q.entries.len();
        let id = index as u64 + 1;
        let now = Instant::now();
        q.entries.push(Entry {
            record: DeliveryRecord {
                id,
                kind: d.kind,
                version: match d.version {
                    ApiVersion::V2 => "v2",
                    ApiVersion::V3 => "v3",
                },
                url: d.url,
                out_trade_no: d.out_trade_no,
                out_refund_no: d.out_refund_no,
                event_id: d.event_id,
                // Filled from the one stored copy when the log is read.
                body: String::new(),
                attempts: Vec::new(),
                acked: false,
                gave_up: false,
                retries: 0,
                pruned: false,
            },
            body: d.body,
            content_type: d.content_type,
            signing: d.signing,
            next_due: Some(now),
            in_flight: false,
        });
        q.due.push(Reverse((now, index)));
        drop(q);
        self.wake.notify_one();
        id
    }

    /// Every delivery, oldest first; only those of `out_trade_no` when given.
    #[must_use]
    pub fn records(&self, out_trade_no: Option<&str>) -> Vec<DeliveryRecord> {
        self.lock()
            .entries
            .iter()
            .filter(|e| out_trade_no.is_none_or(|no| e.record.out_trade_no == no))
            .map(|e| {
                let mut record = e.record.clone();
                record.body = String::from_utf8_lossy(&e.body).into_owned();
                record
            })
            .collect()
    }

    /// Claims the deliveries due at `now` (all pending ones when `all`), marking them in flight.
    fn claim(&self, now: Instant, all: bool) -> Vec<usize> {
        let mut q = self.lock();
        let mut claimed = Vec::new();
        if all {
            for (i, e) in q.entries.iter_mut().enumerate() {
                if e.next_due.is_some() && !e.in_flight {
                    e.in_flight = true;
                    claimed.push(i);
                }
            }
            return claimed;
        }
        while let Some(Reverse((due, i))) = q.due.peek().copied() {
            if due > now {
                break;
            }
            q.due.pop();
            let e = &mut q.entries[i];
            // Stale heap entries (already attempted by a flush, or acked) are skipped.
            if e.next_due == Some(due) && !e.in_flight {
                e.in_flight = true;
                claimed.push(i);
            }
        }
        claimed
    }

    fn next_wake(&self) -> Option<Instant> {
        self.lock().due.peek().map(|Reverse((t, _))| *t)
    }

    /// The scheduler: attempts deliveries when they are due, until `shutdown` turns true.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            for i in self.claim(Instant::now(), false) {
                let this = Arc::clone(&self);
                tokio::spawn(async move { this.attempt(i).await });
            }
            let sleep = match self.next_wake() {
                Some(t) => tokio::time::sleep_until(t),
                None => tokio::time::sleep(Duration::from_secs(3600)),
            };
            tokio::select! {
                () = sleep => {}
                () = self.wake.notified() => {}
                r = shutdown.changed() => {
                    if r.is_err() || *shutdown.borrow() {
                        return;
                    }
                }
            }
        }
    }

    /// Attempts every pending delivery now and waits until no attempt is in flight.
    pub async fn flush(self: &Arc<Self>) -> FlushSummary {
        let claimed = self.claim(Instant::now(), true);
        let attempted = claimed.len();
        let tasks: Vec<_> = claimed
            .into_iter()
            .map(|i| {
                let this = Arc::clone(self);
                tokio::spawn(async move { this.attempt(i).await })
            })
            .collect();
        let mut acked = 0;
        for t in tasks {
            if t.await.unwrap_or(false) {
                acked += 1;
            }
        }
        // Attempts the scheduler started before the flush finish too, so that the log is settled.
        loop {
            let notified = self.idle.notified();
            if !self.lock().entries.iter().any(|e| e.in_flight) {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
        }
        let pending = self
            .lock()
            .entries
            .iter()
            .filter(|e| e.next_due.is_some())
            .count();
        FlushSummary {
            attempted,
            acked,
            pending,
        }
    }

    /// One attempt of entry `i` (already claimed). Returns whether it was acknowledged.
    async fn attempt(self: Arc<Self>, i: usize) -> bool {
        let (url, body, content_type, signing, version, number) = {
            let q = self.lock();
            let e = &q.entries[i];
            (
                e.record.url.clone(),
                e.body.clone(),
                e.content_type,
                e.signing.clone(),
                e.record.version,
                e.record.retries,
            )
        };
        let faults = self.faults.get();
        let delay =
            Duration::from_millis(faults.notify_delay_ms) + jitter(faults.notify_shuffle_ms);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut attempts = Vec::new();
        let mut acked = false;
        if roll(faults.notify_drop_rate) {
            attempts.push(self.attempt_record(number, "dropped"));
        } else {
            let _permit = self.sends.acquire().await;
            // Probes exist in v3 only: v2 notifications carry their signature in the body.
            if matches!(signing, DeliverySigning::V3(..)) && roll(faults.signtest_probe_rate) {
                attempts.push(
                    self.send(&url, &body, content_type, &signing, version, number, true)
                        .await,
                );
            }
            let first = self
                .send(&url, &body, content_type, &signing, version, number, false)
                .await;
            acked |= first.acked;
            attempts.push(first);
            if roll(faults.notify_duplicate_rate) {
                let mut dup = self
                    .send(&url, &body, content_type, &signing, version, number, false)
                    .await;
                dup.duplicate = true;
                acked |= dup.acked;
                attempts.push(dup);
            }
        }
        let mut q = self.lock();
        let e = &mut q.entries[i];
        e.record.attempts.extend(attempts);
        e.in_flight = false;
        let mut reschedule = None;
        if acked {
            e.record.acked = true;
            e.next_due = None;
        } else if e.record.retries >= RETRY_SCHEDULE_SECS.len() {
            e.record.gave_up = true;
            e.next_due = None;
        } else {
            let wait = scale(
                Duration::from_secs(RETRY_SCHEDULE_SECS[e.record.retries]),
                self.time_scale,
            );
            e.record.retries += 1;
            let due = Instant::now() + wait;
            e.next_due = Some(due);
            reschedule = Some(due);
        }
        if let Some(due) = reschedule {
            q.due.push(Reverse((due, i)));
        } else {
            q.finished.push_back(i);
            while q.finished.len() > FULL_RECORDS_KEPT {
                let Some(old) = q.finished.pop_front() else {
                    break;
                };
                let e = &mut q.entries[old];
                e.body = Bytes::new();
                e.record.pruned = true;
                for a in &mut e.record.attempts {
                    a.headers = BTreeMap::new();
                }
            }
        }
        drop(q);
        self.wake.notify_one();
        self.idle.notify_waiters();
        acked
    }

    fn attempt_record(&self, number: usize, outcome: &'static str) -> Attempt {
        Attempt {
            number,
            at: rfc3339_cst(self.clock.now()),
            outcome,
            status: None,
            acked: false,
            duplicate: false,
            probe: false,
            serial: None,
            headers: BTreeMap::new(),
            error: None,
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        url: &str,
        body: &Bytes,
        content_type: &'static str,
        signing: &DeliverySigning,
        version: &'static str,
        number: usize,
        probe: bool,
    ) -> Attempt {
        let mut record = self.attempt_record(number, "sent");
        record.probe = probe;
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_type),
        );
        if let DeliverySigning::V3(key, signer) = signing {
            match signer.sign(*key, AppState::wall_now(), body) {
                Ok(signature) => {
                    let signature = if probe {
                        signature.into_probe()
                    } else {
                        signature
                    };
                    record.serial = Some(signature.serial.clone());
                    signature.apply(&mut headers);
                    if let Ok(id) = http::HeaderValue::from_str(&request_id()) {
                        headers.insert("request-id", id);
                    }
                }
                Err(e) => {
                    record.outcome = "failed";
                    record.error = Some(e.to_string());
                    return record;
                }
            }
        }
        record.headers = headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let request = self.client.post(url).headers(headers).body(body.clone());
        match request.send().await {
            Ok(response) => {
                let status = response.status();
                record.status = Some(status.as_u16());
                record.acked = if version == "v3" {
                    status == http::StatusCode::OK || status == http::StatusCode::NO_CONTENT
                } else {
                    let text = response.bytes().await.unwrap_or_default();
                    status == http::StatusCode::OK && is_v2_ack(&text)
                };
            }
            Err(e) => {
                record.outcome = "failed";
                record.error = Some(e.without_url().to_string());
            }
        }
        if probe {
            record.acked = false;
        }
        record
    }
}

/// Whether a v2 answer acknowledges: an `<xml>` with `return_code` `SUCCESS`.
#[must_use]
pub fn is_v2_ack(body: &[u8]) -> bool {
    wxpay::v2::xml::decode(body).is_ok_and(|m| m.get("return_code").is_some_and(|c| c == "SUCCESS"))
}

fn event_id() -> String {
    // The shape of real ids: EV- and 19 digits.
    format!(
        "EV-{:019}",
        rand::random::<u64>() % 10_000_000_000_000_000_000
    )
}

pub(crate) fn v3_envelope(
    state: &AppState,
    merchant: &crate::app::MerchantAccount,
    event_type: &str,
    summary: &str,
    original_type: &str,
    plaintext: &[u8],
) -> Option<(String, Bytes)> {
    let nonce = wxpay::nonce::random_string(12);
    let ciphertext = merchant
        .api_v3_key
        .encrypt(&nonce, original_type, plaintext)
        .ok()?;
    let id = event_id();
    let body = json!({
        "id": id,
        "create_time": rfc3339_cst(state.now()),
        "resource_type": "encrypt-resource",
        "event_type": event_type,
        "summary": summary,
        "resource": {
            "original_type": original_type,
            "algorithm": "AEAD_AES_256_GCM",
            "ciphertext": ciphertext,
            "associated_data": original_type,
            "nonce": nonce,
        }
    });
    Some((id, Bytes::from(body.to_string())))
}

/// The v3 `TRANSACTION.SUCCESS` notification of a paid order (§B.15).
#[must_use]
pub fn v3_payment_notification(state: &AppState, order: &Order) -> Option<NewDelivery> {
    let resource = match state.partner.order(&order.out_trade_no) {
        Some(partner) => crate::partner::transaction_json(order, &partner),
        None => crate::v3::transaction_json(order),
    };
    let merchant = state.account_for(&order.mchid);
    let (id, body) = v3_envelope(
        state,
        &merchant,
        "TRANSACTION.SUCCESS",
        "支付成功",
        "transaction",
        resource.to_string().as_bytes(),
    )?;
    Some(NewDelivery {
        kind: DeliveryKind::Payment,
        version: ApiVersion::V3,
        url: order.notify_url.clone(),
        body,
        content_type: "application/json",
        signing: DeliverySigning::V3(merchant.signer.notification_key(), merchant.signer.clone()),
        out_trade_no: order.out_trade_no.clone(),
        out_refund_no: None,
        event_id: Some(id),
    })
}

/// The v3 refund notification of a refund that reached a final state (§B.16). `None` when the
/// refund has no `notify_url`.
#[must_use]
pub fn v3_refund_notification(
    state: &AppState,
    order: &Order,
    refund: &Refund,
) -> Option<NewDelivery> {
    let url = refund.notify_url.clone()?;
    let (event_type, summary) = match refund.status {
        RefundStatus::Success => ("REFUND.SUCCESS", "退款成功"),
        RefundStatus::Closed => ("REFUND.CLOSED", "退款关闭"),
        RefundStatus::Abnormal => ("REFUND.ABNORMAL", "退款异常"),
        RefundStatus::Processing => return None,
    };
    let mut resource = json!({
        "mchid": order.mchid,
        "out_trade_no": refund.out_trade_no,
        "transaction_id": refund.transaction_id,
        "out_refund_no": refund.out_refund_no,
        "refund_id": refund.refund_id,
        "refund_status": refund.status.as_v3(),
        "user_received_account": "支付用户零钱",
        "amount": {
            "total": refund.total,
            "refund": refund.amount,
            "payer_total": refund.total,
            "payer_refund": refund.amount,
        }
    });
    if let Some(t) = refund.success_time {
        resource["success_time"] = json!(rfc3339_cst(t));
    }
    // A sub-merchant's refund names the provider and the sub-merchant instead of `mchid`.
    if let Some(partner) = state.partner.order(&order.out_trade_no)
        && let Some(obj) = resource.as_object_mut()
    {
        obj.remove("mchid");
        obj.insert("sp_mchid".into(), json!(order.mchid));
        obj.insert("sub_mchid".into(), json!(partner.sub_mchid));
    }
    let merchant = state.account_for(&order.mchid);
    let (id, body) = v3_envelope(
        state,
        &merchant,
        event_type,
        summary,
        "refund",
        resource.to_string().as_bytes(),
    )?;
    Some(NewDelivery {
        kind: DeliveryKind::Refund,
        version: ApiVersion::V3,
        url,
        body,
        content_type: "application/json",
        signing: DeliverySigning::V3(merchant.signer.notification_key(), merchant.signer.clone()),
        out_trade_no: order.out_trade_no.clone(),
        out_refund_no: Some(refund.out_refund_no.clone()),
        event_id: Some(id),
    })
}

/// The v2 payment notification of a paid order (§A.10): signed XML in the order's sign type (by
/// the order's merchant: the provider for a sub-merchant's order).
#[must_use]
pub fn v2_payment_notification(state: &AppState, order: &Order) -> Option<NewDelivery> {
    let account = state.account_for(&order.mchid);
    let m = &account.credentials;
    let mut map = wxpay::v2::XmlMap::new();
    let total = order.total.to_string();
    let time_end = v2_time(order.success_time?);
    let mut put = |k: &str, v: &str| {
        if !v.is_empty() {
            map.insert(k.to_owned(), v.to_owned());
        }
    };
    put("return_code", "SUCCESS");
    put("return_msg", "OK");
    put("appid", &order.appid);
    put("mch_id", &order.mchid);
    put("nonce_str", &wxpay::nonce::nonce());
    put("result_code", "SUCCESS");
    // Payer fields; a sub-merchant's order also names it, its mini program and the payer
    // under it (`sub_openid`, `sub_is_subscribe`).
    let partner = state.partner.order(&order.out_trade_no);
    if let Some(p) = &partner {
        put("sub_mch_id", &p.sub_mchid);
        put("sub_appid", p.sub_appid.as_deref().unwrap_or(""));
    }
    crate::v2::add_payer(&mut map, order, partner.as_ref());
    let mut put = |k: &str, v: &str| {
        if !v.is_empty() {
            map.insert(k.to_owned(), v.to_owned());
        }
    };
    put("trade_type", order.trade_type.as_str());
    put("bank_type", "OTHERS");
    put("total_fee", &total);
    put("fee_type", "CNY");
    put("cash_fee", &total);
    put("transaction_id", order.transaction_id.as_deref()?);
    put("out_trade_no", &order.out_trade_no);
    put("attach", order.attach.as_deref().unwrap_or(""));
    put("time_end", &time_end);
    if order.sign_type == wxpay::v2::SignType::HmacSha256 {
        put("sign_type", "HMAC-SHA256");
    }
    let sign = wxpay::v2::sign::sign_map(&map, &m.api_v2_key, order.sign_type);
    map.insert("sign".into(), sign);
    let xml = wxpay::v2::xml::encode(&map).ok()?;
    Some(NewDelivery {
        kind: DeliveryKind::Payment,
        version: ApiVersion::V2,
        url: order.notify_url.clone(),
        body: Bytes::from(xml),
        content_type: "text/xml",
        signing: DeliverySigning::None,
        out_trade_no: order.out_trade_no.clone(),
        out_refund_no: None,
        event_id: None,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn schedule_is_wechats_24h4m() {
        assert_eq!(
            super::RETRY_SCHEDULE_SECS.iter().sum::<u64>(),
            24 * 3600 + 4 * 60
        );
    }

    #[test]
    fn v2_acks_need_return_code_success_xml() {
        assert!(super::is_v2_ack(b"<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>"));
        assert!(!super::is_v2_ack(b"success"));
        assert!(!super::is_v2_ack(
            b"<xml><return_code>FAIL</return_code></xml>"
        ));
        assert!(!super::is_v2_ack(br#"{"code":"SUCCESS"}"#));
    }
}

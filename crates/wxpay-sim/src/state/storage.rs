//! The compact in-memory records and the [`Store`]: sharded orders, the refund table, and the
//! journal that keeps them across restarts.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use time::Date;
use wxpay::nonce::Clock;
use wxpay::v2::SignType;

use super::clock::cst_date;
use super::ids::{
    id_of_prepay, id_of_transaction, prepay_id, refund_id, seq_of_refund_id, transaction_id,
};
use super::model::*;
use crate::journal::{Entry, Journal, OrderLine, RefundLine};

const SHARDS: usize = 64;

// ---------------------------------------------------------------------------------------------
// Compact records

#[derive(Debug)]
struct OrderRecord {
    /// `out_trade_no`, `openid`, `attach`, `description`, concatenated.
    text: Box<str>,
    lens: [u16; 3],
    appid: Arc<str>,
    mchid: Arc<str>,
    notify_url: Arc<str>,
    /// Interned: terminals are few.
    device_info: Option<Arc<str>>,
    total: u64,
    refunded: u64,
    created_at: i64,
    time_expire: i64,
    prepay_created_at: i64,
    prepay_nonce: u64,
    success_time: i64,
    tx_nonce: u16,
    refund_count: u8,
    state: u8,
    version: ApiVersion,
    sign_type: SignType,
    trade_type: TradeType,
    has_attach: bool,
}

impl OrderRecord {
    fn part(&self, i: usize) -> &str {
        let mut start = 0usize;
        for l in &self.lens[..i] {
            start += usize::from(*l);
        }
        let end = if i < 3 {
            start + usize::from(self.lens[i])
        } else {
            self.text.len()
        };
        &self.text[start..end]
    }

    fn out_trade_no(&self) -> &str {
        self.part(0)
    }

    fn openid(&self) -> &str {
        self.part(1)
    }

    fn attach(&self) -> Option<&str> {
        self.has_attach.then(|| self.part(2))
    }

    fn description(&self) -> &str {
        self.part(3)
    }

    fn state(&self) -> TradeState {
        TradeState::from_u8(self.state)
    }

    fn set_state(&mut self, s: TradeState) {
        self.state = s.to_u8();
    }

    fn pack(
        out_trade_no: &str,
        openid: &str,
        attach: Option<&str>,
        description: &str,
    ) -> Result<(Box<str>, [u16; 3]), OrderError> {
        let len = |s: &str, name: &'static str| {
            u16::try_from(s.len()).map_err(|_| OrderError::FieldTooLong(name))
        };
        let lens = [
            len(out_trade_no, "out_trade_no")?,
            len(openid, "openid")?,
            len(attach.unwrap_or(""), "attach")?,
        ];
        len(description, "description")?;
        let mut text = String::with_capacity(
            out_trade_no.len() + openid.len() + attach.map_or(0, str::len) + description.len(),
        );
        text.push_str(out_trade_no);
        text.push_str(openid);
        text.push_str(attach.unwrap_or(""));
        text.push_str(description);
        Ok((text.into_boxed_str(), lens))
    }

    fn same_parameters(&self, new: &NewOrder<'_>) -> bool {
        self.openid() == new.openid
            && self.description() == new.description
            && self.attach() == new.attach.filter(|a| !a.is_empty())
            && &*self.appid == new.appid
            && &*self.mchid == new.mchid
            && &*self.notify_url == new.notify_url
            && self.device_info.as_deref() == new.device_info.filter(|d| !d.is_empty())
            && self.total == new.total
            && self.version == new.version
            && self.sign_type == new.sign_type
            && self.trade_type == new.trade_type
            && new.time_expire.is_none_or(|t| t == self.time_expire)
    }

    /// Applies the lazy transition NOTPAY -> CLOSED once `time_expire` has passed.
    fn expire_if_due(&mut self, now: i64) {
        if self.state() == TradeState::NotPay && now >= self.time_expire {
            self.set_state(TradeState::Closed);
        }
    }
}

#[derive(Debug)]
enum Slots {
    One(u32),
    Many(Vec<u32>),
}

#[derive(Debug, Default)]
struct Shard {
    orders: Vec<OrderRecord>,
    /// Hash of `out_trade_no` -> local indexes (collisions are resolved by comparing the text).
    index: HashMap<u64, Slots>,
}

impl Shard {
    fn find(&self, hash: u64, out_trade_no: &str) -> Option<usize> {
        let candidates: &[u32] = match self.index.get(&hash)? {
            Slots::One(i) => std::slice::from_ref(i),
            Slots::Many(v) => v,
        };
        candidates
            .iter()
            .map(|&i| i as usize)
            .find(|&i| self.orders[i].out_trade_no() == out_trade_no)
    }

    fn insert_index(&mut self, hash: u64, local: u32) {
        match self.index.get_mut(&hash) {
            None => {
                self.index.insert(hash, Slots::One(local));
            }
            Some(slot) => {
                let list = match slot {
                    Slots::One(i) => vec![*i, local],
                    Slots::Many(v) => {
                        v.push(local);
                        return;
                    }
                };
                *slot = Slots::Many(list);
            }
        }
    }
}

#[derive(Debug, Default)]
struct RefundTable {
    refunds: Vec<Refund>,
    by_out_refund_no: HashMap<Box<str>, u32>,
    /// Order number (global id) -> refund sequence numbers.
    by_order: HashMap<u32, Vec<u32>>,
}

/// FNV-1a: an order's shard and position (encoded in its ids) must be the same after a restart
/// replays the journal, whatever Rust version built the simulator (std's hasher may change).
fn text_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn random_u64() -> u64 {
    rand::random::<u64>()
}

// ---------------------------------------------------------------------------------------------
// Store

/// All orders and refunds of the simulator, in memory, safe to share between request handlers.
#[derive(Debug)]
pub struct Store {
    clock: Arc<dyn Clock>,
    shards: Vec<Mutex<Shard>>,
    refunds: RwLock<RefundTable>,
    interned: Mutex<HashSet<Arc<str>>>,
    journal: Option<Arc<Journal>>,
}

impl Store {
    /// An empty store reading time from `clock`.
    #[must_use]
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            refunds: RwLock::new(RefundTable::default()),
            interned: Mutex::new(HashSet::new()),
            journal: None,
        }
    }

    /// A store holding what `entries` (a journal read at start) describe, which records every
    /// later change in `journal`.
    #[must_use]
    pub fn persistent(clock: Arc<dyn Clock>, journal: Arc<Journal>, entries: &[Entry]) -> Self {
        let mut store = Self::new(clock);
        for entry in entries {
            match entry {
                Entry::Order(line) => store.restore_order(line),
                Entry::Refund(line) => store.restore_refund(line),
                Entry::User(_)
                | Entry::SubMerchant(_)
                | Entry::SubUser(_)
                | Entry::PartnerOrder(_)
                | Entry::Trade(_)
                | Entry::Merchant(_)
                | Entry::App(_)
                | Entry::TransferBill(_)
                | Entry::TransferAuthorization(_)
                | Entry::TransferBalance(_)
                | Entry::TransferPayee(_) => {}
            }
        }
        store.journal = Some(journal);
        store
    }

    fn restore_order(&self, line: &OrderLine) {
        let Some(rec) = self.record_of_line(line) else {
            tracing::warn!(out_trade_no = %line.out_trade_no, "journal order skipped: unreadable");
            return;
        };
        let hash = text_hash(&line.out_trade_no);
        let mut shard = self.shard((hash % SHARDS as u64) as usize);
        if let Some(local) = shard.find(hash, &line.out_trade_no) {
            shard.orders[local] = rec;
        } else {
            let local = u32::try_from(shard.orders.len()).unwrap_or(u32::MAX);
            shard.orders.push(rec);
            shard.insert_index(hash, local);
        }
    }

    fn restore_refund(&self, line: &RefundLine) {
        let Some(order_id) = self.with_order(&line.out_trade_no, |id, _| id) else {
            tracing::warn!(out_refund_no = %line.out_refund_no, "journal refund of an unknown order skipped");
            return;
        };
        let (Some(status), Some(version)) = (
            refund_status_of(&line.status),
            api_version_of(&line.version),
        ) else {
            return;
        };
        let refund = Refund {
            out_refund_no: line.out_refund_no.clone(),
            refund_id: line.refund_id.clone(),
            out_trade_no: line.out_trade_no.clone(),
            transaction_id: line.transaction_id.clone(),
            amount: line.amount,
            total: line.total,
            status,
            reason: line.reason.clone(),
            notify_url: line.notify_url.clone(),
            version,
            created_at: line.created_at,
            success_time: line.success_time,
            due_at: line.due_at,
        };
        let mut table = self.lock_refunds_write();
        if let Some(&seq) = table.by_out_refund_no.get(line.out_refund_no.as_str()) {
            table.refunds[seq as usize] = refund;
        } else {
            let seq = u32::try_from(table.refunds.len()).unwrap_or(u32::MAX);
            table.refunds.push(refund);
            table
                .by_out_refund_no
                .insert(line.out_refund_no.as_str().into(), seq);
            table.by_order.entry(order_id).or_default().push(seq);
        }
    }

    fn record_of_line(&self, l: &OrderLine) -> Option<OrderRecord> {
        let (text, lens) = OrderRecord::pack(
            &l.out_trade_no,
            &l.openid,
            l.attach.as_deref(),
            &l.description,
        )
        .ok()?;
        Some(OrderRecord {
            text,
            lens,
            appid: self.intern(&l.appid),
            mchid: self.intern(&l.mchid),
            notify_url: self.intern(&l.notify_url),
            device_info: l.device_info.as_deref().map(|d| self.intern(d)),
            total: l.total,
            refunded: l.refunded,
            created_at: l.created_at,
            time_expire: l.time_expire,
            prepay_created_at: l.prepay_created_at,
            prepay_nonce: l.prepay_nonce,
            success_time: l.success_time,
            tx_nonce: l.tx_nonce,
            refund_count: l.refund_count,
            state: trade_state_of(&l.state)?.to_u8(),
            version: api_version_of(&l.version)?,
            sign_type: l.sign_type.parse().ok()?,
            trade_type: TradeType::parse(&l.trade_type)?,
            has_attach: l.attach.is_some(),
        })
    }

    /// Records an order as it now is (called under its shard's lock, so that the journal keeps
    /// each shard's insertion order, which the ids encode).
    fn log_order(&self, r: &OrderRecord) {
        let Some(journal) = &self.journal else {
            return;
        };
        journal.append(&Entry::Order(OrderLine {
            out_trade_no: r.out_trade_no().to_owned(),
            openid: r.openid().to_owned(),
            attach: r.attach().map(str::to_owned),
            description: r.description().to_owned(),
            appid: r.appid.to_string(),
            mchid: r.mchid.to_string(),
            notify_url: r.notify_url.to_string(),
            device_info: r.device_info.as_deref().map(str::to_owned),
            total: r.total,
            refunded: r.refunded,
            created_at: r.created_at,
            time_expire: r.time_expire,
            prepay_created_at: r.prepay_created_at,
            prepay_nonce: r.prepay_nonce,
            success_time: r.success_time,
            tx_nonce: r.tx_nonce,
            refund_count: r.refund_count,
            state: r.state().as_str().to_owned(),
            version: api_version_str(r.version).to_owned(),
            sign_type: r.sign_type.as_str().to_owned(),
            trade_type: r.trade_type.as_str().to_owned(),
        }));
    }

    /// Records a refund as it now is (called under the refund table's lock).
    fn log_refund(&self, r: &Refund) {
        let Some(journal) = &self.journal else {
            return;
        };
        journal.append(&Entry::Refund(RefundLine {
            out_refund_no: r.out_refund_no.clone(),
            refund_id: r.refund_id.clone(),
            out_trade_no: r.out_trade_no.clone(),
            transaction_id: r.transaction_id.clone(),
            amount: r.amount,
            total: r.total,
            status: r.status.as_v3().to_owned(),
            reason: r.reason.clone(),
            notify_url: r.notify_url.clone(),
            version: api_version_str(r.version).to_owned(),
            created_at: r.created_at,
            success_time: r.success_time,
            due_at: r.due_at,
        }));
    }

    /// The store's clock (Unix seconds now).
    #[must_use]
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    fn shard(&self, i: usize) -> MutexGuard<'_, Shard> {
        self.shards[i]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn intern(&self, s: &str) -> Arc<str> {
        let mut set = self
            .interned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(a) = set.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        set.insert(a.clone());
        a
    }

    /// How many orders are held.
    #[must_use]
    pub fn order_count(&self) -> usize {
        (0..SHARDS).map(|i| self.shard(i).orders.len()).sum()
    }

    fn snapshot(id: u32, r: &OrderRecord) -> Order {
        let success_time = (r.success_time != 0).then_some(r.success_time);
        Order {
            out_trade_no: r.out_trade_no().to_owned(),
            appid: r.appid.to_string(),
            mchid: r.mchid.to_string(),
            openid: r.openid().to_owned(),
            description: r.description().to_owned(),
            attach: r.attach().map(str::to_owned),
            device_info: r.device_info.as_deref().map(str::to_owned),
            notify_url: r.notify_url.to_string(),
            total: r.total,
            version: r.version,
            sign_type: r.sign_type,
            trade_type: r.trade_type,
            trade_state: r.state(),
            prepay_id: prepay_id(id, r.prepay_created_at, r.prepay_nonce),
            prepay_created_at: r.prepay_created_at,
            time_expire: r.time_expire,
            transaction_id: success_time.map(|t| transaction_id(id, t, r.tx_nonce)),
            success_time,
            refunded: r.refunded,
            refund_count: u32::from(r.refund_count),
            created_at: r.created_at,
        }
    }

    fn global_id(shard: usize, local: usize) -> u32 {
        u32::try_from(local * SHARDS + shard).unwrap_or(u32::MAX)
    }

    /// Creates an order, or finds the same one again.
    ///
    /// The same `out_trade_no` with the same parameters gives the same order: with its prepay id
    /// while that is valid, with a fresh one after the 2 hours ([`OrderCreation::PrepayRenewed`]).
    ///
    /// # Errors
    /// [`OrderError::OutTradeNoUsed`] when the number exists with other parameters or its order
    /// is closed, [`OrderError::OrderPaid`] when it is paid, [`OrderError::InvalidAmount`] for a zero total, [`OrderError::FieldTooLong`].
    pub fn create_or_reuse_order(
        &self,
        new: &NewOrder<'_>,
    ) -> Result<(Order, OrderCreation), OrderError> {
        if new.total == 0 {
            return Err(OrderError::InvalidAmount);
        }
        let now = self.now();
        let hash = text_hash(new.out_trade_no);
        let shard_no = (hash % SHARDS as u64) as usize;
        let attach = new.attach.filter(|a| !a.is_empty());
        let (text, lens) =
            OrderRecord::pack(new.out_trade_no, new.openid, attach, new.description)?;
        let appid = self.intern(new.appid);
        let mchid = self.intern(new.mchid);
        let notify_url = self.intern(new.notify_url);
        let device_info = new
            .device_info
            .filter(|d| !d.is_empty())
            .map(|d| self.intern(d));
        let mut shard = self.shard(shard_no);
        if let Some(local) = shard.find(hash, new.out_trade_no) {
            let id = Self::global_id(shard_no, local);
            let rec = &mut shard.orders[local];
            rec.expire_if_due(now);
            match rec.state() {
                TradeState::Success | TradeState::Refund => return Err(OrderError::OrderPaid),
                // WeChat answers the number of a closed order as a duplicate (many captures).
                TradeState::Closed => return Err(OrderError::OutTradeNoUsed),
                TradeState::NotPay | TradeState::PayError => {}
            }
            if !rec.same_parameters(new) {
                return Err(OrderError::OutTradeNoUsed);
            }
            if rec.state() == TradeState::PayError {
                return Err(OrderError::NotPayable(TradeState::PayError));
            }
            let creation = if now >= rec.prepay_created_at + PREPAY_TTL_SECS {
                rec.prepay_created_at = now;
                rec.prepay_nonce = random_u64();
                self.log_order(rec);
                OrderCreation::PrepayRenewed
            } else {
                OrderCreation::Reused
            };
            return Ok((Self::snapshot(id, rec), creation));
        }
        let local = shard.orders.len();
        let id = Self::global_id(shard_no, local);
        let rec = OrderRecord {
            text,
            lens,
            appid,
            mchid,
            notify_url,
            device_info,
            total: new.total,
            refunded: 0,
            created_at: now,
            time_expire: new.time_expire.unwrap_or(now + DEFAULT_ORDER_TTL_SECS),
            prepay_created_at: now,
            prepay_nonce: random_u64(),
            success_time: 0,
            tx_nonce: (random_u64() % 10_000) as u16,
            refund_count: 0,
            state: TradeState::NotPay.to_u8(),
            version: new.version,
            sign_type: new.sign_type,
            trade_type: new.trade_type,
            has_attach: attach.is_some(),
        };
        let snapshot = Self::snapshot(id, &rec);
        self.log_order(&rec);
        shard.orders.push(rec);
        shard.insert_index(hash, u32::try_from(local).unwrap_or(u32::MAX));
        Ok((snapshot, OrderCreation::Created))
    }

    /// Runs `f` on the order with this `out_trade_no` (after the lazy expiry), under its lock.
    fn with_order<T>(
        &self,
        out_trade_no: &str,
        f: impl FnOnce(u32, &mut OrderRecord) -> T,
    ) -> Option<T> {
        let hash = text_hash(out_trade_no);
        let shard_no = (hash % SHARDS as u64) as usize;
        let now = self.now();
        let mut shard = self.shard(shard_no);
        let local = shard.find(hash, out_trade_no)?;
        let rec = &mut shard.orders[local];
        rec.expire_if_due(now);
        Some(f(Self::global_id(shard_no, local), rec))
    }

    /// Runs `f` on the order with global number `id`.
    fn with_order_id<T>(&self, id: u32, f: impl FnOnce(&mut OrderRecord) -> T) -> Option<T> {
        let shard_no = id as usize % SHARDS;
        let local = id as usize / SHARDS;
        let now = self.now();
        let mut shard = self.shard(shard_no);
        let rec = shard.orders.get_mut(local)?;
        rec.expire_if_due(now);
        Some(f(rec))
    }

    /// The order with this `out_trade_no`. An unpaid order past its `time_expire` reads CLOSED.
    #[must_use]
    pub fn order(&self, out_trade_no: &str) -> Option<Order> {
        self.with_order(out_trade_no, |id, r| Self::snapshot(id, r))
    }

    /// The order with this `transaction_id` (only paid orders have one).
    #[must_use]
    pub fn order_by_transaction_id(&self, transaction_id: &str) -> Option<Order> {
        let id = id_of_transaction(transaction_id)?;
        self.with_order_id(id, |r| Self::snapshot(id, r))
            .filter(|o| o.transaction_id.as_deref() == Some(transaction_id))
    }

    /// The order whose current prepay id is `prepay_id`.
    #[must_use]
    pub fn order_by_prepay_id(&self, prepay_id: &str) -> Option<Order> {
        let id = id_of_prepay(prepay_id)?;
        self.with_order_id(id, |r| Self::snapshot(id, r))
            .filter(|o| o.prepay_id == prepay_id)
    }

    /// Closes an order. Closing a closed order is fine.
    ///
    /// # Errors
    /// [`OrderError::OrderNotExist`], or [`OrderError::OrderPaid`] for a paid order.
    pub fn close_order(&self, out_trade_no: &str) -> Result<Order, OrderError> {
        self.with_order(out_trade_no, |id, r| {
            match r.state() {
                TradeState::Success | TradeState::Refund => return Err(OrderError::OrderPaid),
                TradeState::NotPay | TradeState::PayError | TradeState::Closed => {
                    r.set_state(TradeState::Closed);
                }
            }
            self.log_order(r);
            Ok(Self::snapshot(id, r))
        })
        .unwrap_or(Err(OrderError::OrderNotExist))
    }

    /// Pays the order of `prepay_id` as `payer_openid`, as the WeChat client does after the user
    /// confirms.
    ///
    /// # Errors
    /// [`OrderError::PrepayIdInvalid`], [`OrderError::OrderPaid`], [`OrderError::OrderClosed`]
    /// (closed or past `time_expire`), [`OrderError::NotPayable`], [`OrderError::PrepayExpired`],
    /// [`OrderError::PayerMismatch`].
    pub fn pay(
        &self,
        prepay: &str,
        payer_openid: &str,
        outcome: PayOutcome,
    ) -> Result<Order, OrderError> {
        let id = id_of_prepay(prepay).ok_or(OrderError::PrepayIdInvalid)?;
        let now = self.now();
        self.with_order_id(id, |r| {
            if prepay_id(id, r.prepay_created_at, r.prepay_nonce) != prepay {
                return Err(OrderError::PrepayIdInvalid);
            }
            match r.state() {
                TradeState::Success | TradeState::Refund => return Err(OrderError::OrderPaid),
                TradeState::Closed => return Err(OrderError::OrderClosed),
                TradeState::PayError => return Err(OrderError::NotPayable(TradeState::PayError)),
                TradeState::NotPay => {}
            }
            if now >= r.prepay_created_at + PREPAY_TTL_SECS {
                return Err(OrderError::PrepayExpired);
            }
            if r.openid().is_empty() {
                // NATIVE orders learn their payer when paid.
                let (text, lens) =
                    OrderRecord::pack(r.out_trade_no(), payer_openid, r.attach(), r.description())?;
                r.text = text;
                r.lens = lens;
            } else if r.openid() != payer_openid {
                return Err(OrderError::PayerMismatch);
            }
            match outcome {
                PayOutcome::Success => {
                    r.set_state(TradeState::Success);
                    r.success_time = now;
                }
                PayOutcome::PayError => r.set_state(TradeState::PayError),
            }
            self.log_order(r);
            Ok(Self::snapshot(id, r))
        })
        .unwrap_or(Err(OrderError::PrepayIdInvalid))
    }

    fn lock_refunds_write(&self) -> std::sync::RwLockWriteGuard<'_, RefundTable> {
        self.refunds
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_refunds_read(&self) -> std::sync::RwLockReadGuard<'_, RefundTable> {
        self.refunds
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Accepts a refund (status PROCESSING, completed later by [`Store::complete_refund`]).
    ///
    /// Idempotent by `out_refund_no`: the same number for the same order and amount returns the
    /// existing refund and `false`.
    ///
    /// # Errors
    /// [`OrderError::OrderNotExist`], [`OrderError::OutRefundNoUsed`],
    /// [`OrderError::OrderNotPaid`], [`OrderError::InvalidAmount`],
    /// [`OrderError::RefundTotalMismatch`], [`OrderError::RefundExceedsRemaining`],
    /// [`OrderError::TooManyRefunds`].
    pub fn refund(&self, req: &NewRefund<'_>) -> Result<(Refund, bool), OrderError> {
        let order_id = match req.order {
            OrderRef::TransactionId(tx) => {
                let id = id_of_transaction(tx).ok_or(OrderError::OrderNotExist)?;
                let known = self
                    .with_order_id(id, |r| {
                        r.success_time != 0 && transaction_id(id, r.success_time, r.tx_nonce) == tx
                    })
                    .unwrap_or(false);
                if !known {
                    return Err(OrderError::OrderNotExist);
                }
                id
            }
            OrderRef::OutTradeNo(no) => self
                .with_order(no, |id, _| id)
                .ok_or(OrderError::OrderNotExist)?,
        };
        // Lock order: refund table, then the order's shard.
        let mut table = self.lock_refunds_write();
        if let Some(&seq) = table.by_out_refund_no.get(req.out_refund_no) {
            let existing = &table.refunds[seq as usize];
            let same_order = table
                .by_order
                .get(&order_id)
                .is_some_and(|v| v.contains(&seq));
            return if same_order && existing.amount == req.amount && existing.total == req.total {
                Ok((existing.clone(), false))
            } else {
                Err(OrderError::OutRefundNoUsed)
            };
        }
        if req.amount == 0 {
            return Err(OrderError::InvalidAmount);
        }
        let now = self.now();
        let seq = u32::try_from(table.refunds.len()).unwrap_or(u32::MAX);
        let order = self
            .with_order_id(order_id, |r| {
                if !r.state().is_paid() {
                    return Err(OrderError::OrderNotPaid);
                }
                if req.total != r.total {
                    return Err(OrderError::RefundTotalMismatch { total: r.total });
                }
                let remaining = r.total - r.refunded;
                if req.amount > remaining {
                    return Err(OrderError::RefundExceedsRemaining { remaining });
                }
                if u32::from(r.refund_count) >= MAX_REFUNDS_PER_ORDER {
                    return Err(OrderError::TooManyRefunds);
                }
                r.refunded += req.amount;
                r.refund_count += 1;
                r.set_state(TradeState::Refund);
                self.log_order(r);
                Ok(Self::snapshot(order_id, r))
            })
            .unwrap_or(Err(OrderError::OrderNotExist))?;
        let refund = Refund {
            out_refund_no: req.out_refund_no.to_owned(),
            refund_id: refund_id(seq, now, (random_u64() % 100_000) as u32),
            out_trade_no: order.out_trade_no,
            transaction_id: order.transaction_id.unwrap_or_default(),
            amount: req.amount,
            total: order.total,
            status: RefundStatus::Processing,
            reason: req.reason.filter(|r| !r.is_empty()).map(str::to_owned),
            notify_url: req.notify_url.filter(|u| !u.is_empty()).map(str::to_owned),
            version: req.version,
            created_at: now,
            success_time: None,
            due_at: now + REFUND_PROCESSING_SECS,
        };
        self.log_refund(&refund);
        table.refunds.push(refund.clone());
        table.by_out_refund_no.insert(req.out_refund_no.into(), seq);
        table.by_order.entry(order_id).or_default().push(seq);
        Ok((refund, true))
    }

    /// The refund with this `out_refund_no`.
    #[must_use]
    pub fn refund_by_out_refund_no(&self, out_refund_no: &str) -> Option<Refund> {
        let table = self.lock_refunds_read();
        let seq = *table.by_out_refund_no.get(out_refund_no)?;
        table.refunds.get(seq as usize).cloned()
    }

    /// The refund with this `refund_id`.
    #[must_use]
    pub fn refund_by_refund_id(&self, refund_id: &str) -> Option<Refund> {
        let seq = seq_of_refund_id(refund_id)?;
        let table = self.lock_refunds_read();
        table
            .refunds
            .get(seq as usize)
            .filter(|r| r.refund_id == refund_id)
            .cloned()
    }

    /// The refunds of an order, oldest first.
    #[must_use]
    pub fn refunds_of_order(&self, out_trade_no: &str) -> Vec<Refund> {
        let Some(id) = self.with_order(out_trade_no, |id, _| id) else {
            return Vec::new();
        };
        let table = self.lock_refunds_read();
        table
            .by_order
            .get(&id)
            .map(|seqs| {
                seqs.iter()
                    .filter_map(|&s| table.refunds.get(s as usize).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Finishes a PROCESSING refund with `status` (SUCCESS sets its success time). Returns the
    /// refund when this call made the transition, `None` when it was not PROCESSING (so exactly
    /// one caller sends the refund notification).
    pub fn complete_refund(&self, out_refund_no: &str, status: RefundStatus) -> Option<Refund> {
        if status == RefundStatus::Processing {
            return None;
        }
        let now = self.now();
        let mut table = self.lock_refunds_write();
        let seq = *table.by_out_refund_no.get(out_refund_no)?;
        let refund = table.refunds.get_mut(seq as usize)?;
        if refund.status != RefundStatus::Processing {
            return None;
        }
        refund.status = status;
        if status == RefundStatus::Success {
            refund.success_time = Some(now);
        }
        let refund = refund.clone();
        self.log_refund(&refund);
        Some(refund)
    }

    /// The `out_refund_no` of every PROCESSING refund whose time has come on the simulated clock.
    #[must_use]
    pub fn due_refunds(&self) -> Vec<String> {
        let now = self.now();
        self.lock_refunds_read()
            .refunds
            .iter()
            .filter(|r| r.status == RefundStatus::Processing && r.due_at <= now)
            .map(|r| r.out_refund_no.clone())
            .collect()
    }

    /// Every refund still PROCESSING (after a restart, their timers are started again).
    #[must_use]
    pub fn processing_refunds(&self) -> Vec<Refund> {
        self.lock_refunds_read()
            .refunds
            .iter()
            .filter(|r| r.status == RefundStatus::Processing)
            .cloned()
            .collect()
    }

    /// The paid orders of `appid` paid between `begin` and `end` (inclusive, Unix seconds), in
    /// order of payment (then `out_trade_no`).
    #[must_use]
    pub fn paid_orders(&self, appid: &str, begin: i64, end: i64) -> Vec<Order> {
        let mut orders = Vec::new();
        for shard_no in 0..SHARDS {
            let shard = self.shard(shard_no);
            for (local, r) in shard.orders.iter().enumerate() {
                if r.success_time != 0 && (begin..=end).contains(&r.success_time) {
                    let order = Self::snapshot(Self::global_id(shard_no, local), r);
                    if order.appid == appid {
                        orders.push(order);
                    }
                }
            }
        }
        orders.sort_by_key(|o| (o.success_time, o.out_trade_no.clone()));
        orders
    }

    /// The payments and successful refunds of one GMT+8 day, in time order.
    #[must_use]
    pub fn bill_day(&self, date: Date) -> BillDay {
        let mut day = BillDay::default();
        for shard_no in 0..SHARDS {
            let shard = self.shard(shard_no);
            for (local, r) in shard.orders.iter().enumerate() {
                if r.success_time != 0 && cst_date(r.success_time) == date {
                    day.payments
                        .push(Self::snapshot(Self::global_id(shard_no, local), r));
                }
            }
        }
        day.payments
            .sort_by_key(|o| (o.success_time, o.out_trade_no.clone()));
        let refunds: Vec<Refund> = self
            .lock_refunds_read()
            .refunds
            .iter()
            .filter(|r| r.success_time.is_some_and(|t| cst_date(t) == date))
            .cloned()
            .collect();
        for refund in refunds {
            if let Some(order) = self.order(&refund.out_trade_no) {
                day.refunds.push((refund, order));
            }
        }
        day.refunds
            .sort_by_key(|(r, _)| (r.success_time, r.out_refund_no.clone()));
        day
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wxpay::nonce::FixedClock;

    const T0: i64 = 1_700_000_000;

    fn store() -> (Store, FixedClock) {
        let clock = FixedClock::at(T0);
        (Store::new(Arc::new(clock.clone())), clock)
    }

    fn new_order(no: &str) -> NewOrder<'_> {
        NewOrder {
            appid: "wxd678efh567hg6787",
            mchid: "1230000109",
            out_trade_no: no,
            openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
            description: "Image形象店-深圳腾大-QQ公仔",
            attach: Some("a"),
            device_info: None,
            notify_url: "https://example.com/notify",
            total: 100,
            version: ApiVersion::V3,
            sign_type: SignType::Md5,
            trade_type: TradeType::Jsapi,
            time_expire: None,
        }
    }

    #[test]
    fn ids_have_wechat_shapes_and_round_trip() {
        let (s, _) = store();
        let (o, c) = s.create_or_reuse_order(&new_order("order-0001")).unwrap();
        assert_eq!(c, OrderCreation::Created);
        assert_eq!(o.prepay_id.len(), 36);
        assert!(o.prepay_id.starts_with("wx20231115"), "{}", o.prepay_id);
        assert_eq!(
            s.order_by_prepay_id(&o.prepay_id).unwrap().out_trade_no,
            "order-0001"
        );
        let paid = s.pay(&o.prepay_id, &o.openid, PayOutcome::Success).unwrap();
        let tx = paid.transaction_id.clone().unwrap();
        assert_eq!(tx.len(), 28);
        assert!(tx.starts_with("42000"));
        assert_eq!(s.order_by_transaction_id(&tx).unwrap(), paid);
        let (r, created) = s
            .refund(&NewRefund {
                order: OrderRef::TransactionId(&tx),
                out_refund_no: "R1",
                amount: 10,
                total: 100,
                reason: None,
                notify_url: None,
                version: ApiVersion::V3,
            })
            .unwrap();
        assert!(created);
        assert_eq!(r.refund_id.len(), 29);
        assert!(r.refund_id.starts_with("50300"));
        assert_eq!(s.refund_by_refund_id(&r.refund_id).unwrap(), r);
    }

    #[test]
    fn same_number_same_parameters_reuses_and_renews_expired_prepay() {
        let (s, clock) = store();
        let (a, _) = s.create_or_reuse_order(&new_order("order-0002")).unwrap();
        let (b, c) = s.create_or_reuse_order(&new_order("order-0002")).unwrap();
        assert_eq!(c, OrderCreation::Reused);
        assert_eq!(a.prepay_id, b.prepay_id);
        let mut other = new_order("order-0002");
        other.total = 101;
        assert_eq!(
            s.create_or_reuse_order(&other),
            Err(OrderError::OutTradeNoUsed)
        );
        clock.set(T0 + PREPAY_TTL_SECS);
        assert_eq!(
            s.pay(&a.prepay_id, &a.openid, PayOutcome::Success),
            Err(OrderError::PrepayExpired)
        );
        let (c2, how) = s.create_or_reuse_order(&new_order("order-0002")).unwrap();
        assert_eq!(how, OrderCreation::PrepayRenewed);
        assert_ne!(c2.prepay_id, a.prepay_id);
        assert_eq!(
            s.pay(&a.prepay_id, &a.openid, PayOutcome::Success),
            Err(OrderError::PrepayIdInvalid)
        );
        assert!(s.pay(&c2.prepay_id, &a.openid, PayOutcome::Success).is_ok());
        assert_eq!(
            s.create_or_reuse_order(&new_order("order-0002")),
            Err(OrderError::OrderPaid)
        );
    }

    #[test]
    fn close_pay_and_expiry_rules() {
        let (s, clock) = store();
        let (o, _) = s.create_or_reuse_order(&new_order("order-0003")).unwrap();
        assert_eq!(
            s.pay(&o.prepay_id, "someone-else", PayOutcome::Success),
            Err(OrderError::PayerMismatch)
        );
        assert_eq!(
            s.close_order("order-0003").unwrap().trade_state,
            TradeState::Closed
        );
        assert!(s.close_order("order-0003").is_ok());
        assert_eq!(s.close_order("nope-0000"), Err(OrderError::OrderNotExist));
        assert_eq!(
            s.pay(&o.prepay_id, &o.openid, PayOutcome::Success),
            Err(OrderError::OrderClosed)
        );
        assert_eq!(
            s.create_or_reuse_order(&new_order("order-0003")),
            Err(OrderError::OutTradeNoUsed)
        );

        let mut short = new_order("order-0004");
        short.time_expire = Some(T0 + 600);
        let (o4, _) = s.create_or_reuse_order(&short).unwrap();
        clock.set(T0 + 601);
        assert_eq!(
            s.order("order-0004").unwrap().trade_state,
            TradeState::Closed
        );
        assert_eq!(
            s.pay(&o4.prepay_id, &o4.openid, PayOutcome::Success),
            Err(OrderError::OrderClosed)
        );

        let (o5, _) = s.create_or_reuse_order(&new_order("order-0005")).unwrap();
        assert_eq!(
            s.pay(&o5.prepay_id, &o5.openid, PayOutcome::PayError)
                .unwrap()
                .trade_state,
            TradeState::PayError
        );
        assert_eq!(
            s.close_order("order-0005").unwrap().trade_state,
            TradeState::Closed
        );
        let (o6, _) = s.create_or_reuse_order(&new_order("order-0006")).unwrap();
        s.pay(&o6.prepay_id, &o6.openid, PayOutcome::Success)
            .unwrap();
        assert_eq!(s.close_order("order-0006"), Err(OrderError::OrderPaid));
    }

    #[test]
    fn refund_rules_and_idempotency() {
        let (s, clock) = store();
        let (o, _) = s.create_or_reuse_order(&new_order("order-0007")).unwrap();
        let req = |no: &'static str, amount: u64| NewRefund {
            order: OrderRef::OutTradeNo("order-0007"),
            out_refund_no: no,
            amount,
            total: 100,
            reason: Some("r"),
            notify_url: Some("https://example.com/refund"),
            version: ApiVersion::V3,
        };
        assert_eq!(s.refund(&req("R1", 10)), Err(OrderError::OrderNotPaid));
        s.pay(&o.prepay_id, &o.openid, PayOutcome::Success).unwrap();
        let (r1, created) = s.refund(&req("R1", 60)).unwrap();
        assert!(created);
        assert_eq!(r1.status, RefundStatus::Processing);
        let (again, created) = s.refund(&req("R1", 60)).unwrap();
        assert!(!created);
        assert_eq!(again, r1);
        assert_eq!(s.refund(&req("R1", 61)), Err(OrderError::OutRefundNoUsed));
        assert_eq!(
            s.refund(&req("R2", 41)),
            Err(OrderError::RefundExceedsRemaining { remaining: 40 })
        );
        let mut wrong_total = req("R2", 1);
        wrong_total.total = 99;
        assert_eq!(
            s.refund(&wrong_total),
            Err(OrderError::RefundTotalMismatch { total: 100 })
        );
        assert_eq!(
            s.order("order-0007").unwrap().trade_state,
            TradeState::Refund
        );
        assert_eq!(s.refunds_of_order("order-0007").len(), 1);
        assert!(s.due_refunds().is_empty());
        clock.set(T0 + REFUND_PROCESSING_SECS);
        assert_eq!(s.due_refunds(), vec!["R1".to_owned()]);
        let done = s.complete_refund("R1", RefundStatus::Success).unwrap();
        assert_eq!(done.success_time, Some(T0 + REFUND_PROCESSING_SECS));
        assert!(s.complete_refund("R1", RefundStatus::Success).is_none());
        let day = s.bill_day(cst_date(T0));
        assert_eq!(day.payments.len(), 1);
        assert_eq!(day.refunds.len(), 1);
    }

    #[test]
    fn fifty_refunds_at_most() {
        let (s, _) = store();
        let mut big = new_order("order-0008");
        big.total = 1000;
        let (o, _) = s.create_or_reuse_order(&big).unwrap();
        s.pay(&o.prepay_id, &o.openid, PayOutcome::Success).unwrap();
        let names: Vec<String> = (0..51).map(|i| format!("R{i}")).collect();
        for (i, no) in names.iter().enumerate() {
            let r = s.refund(&NewRefund {
                order: OrderRef::OutTradeNo("order-0008"),
                out_refund_no: no,
                amount: 1,
                total: 1000,
                reason: None,
                notify_url: None,
                version: ApiVersion::V2,
            });
            if i < 50 {
                assert!(r.is_ok(), "{i}");
            } else {
                assert_eq!(r, Err(OrderError::TooManyRefunds));
            }
        }
    }

    #[test]
    fn record_is_compact() {
        assert!(
            std::mem::size_of::<OrderRecord>() <= 160,
            "{}",
            std::mem::size_of::<OrderRecord>()
        );
    }
}

//! Which WeChat clients serve what. Each mini program (appid) pays through one merchant, with
//! that merchant's v2/v3 clients bound to its appid (one [`WeChat`] per mini program); each
//! merchant answers its own notify URLs with its keys. Read on every request; replaced as a whole
//! when the set of mini programs and merchants changes.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock};

use crate::store::Order;
use crate::wechat::WeChat;

/// Why no clients were found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// No such mini program here.
    #[error("mini program {0} is not registered here")]
    UnknownApp(String),
    /// Several mini programs are registered and the request named none.
    #[error("several mini programs are registered here: say which one (appid)")]
    AppRequired,
    /// No such merchant here.
    #[error("merchant {0} is not registered here")]
    UnknownMerchant(String),
    /// An order whose merchant is not the one its mini program pays through now, and which
    /// that merchant does not serve.
    #[error("order {out_trade_no}: merchant {mchid} does not serve mini program {appid} here")]
    OrderUnroutable {
        /// The order.
        out_trade_no: String,
        /// Its mini program.
        appid: String,
        /// Its merchant.
        mchid: String,
    },
    /// The merchant (or the provider's sub-merchant) takes no new orders (it still settles the
    /// ones it has).
    #[error("merchant {0} is disabled: it takes no new orders")]
    MerchantDisabled(String),
}

/// The mini programs and merchants of one moment.
#[derive(Debug, Default)]
pub struct Directory {
    /// By appid.
    apps: HashMap<String, Arc<WeChat>>,
    /// Each merchant's clients (bound to its first mini program): its notifications, bills and
    /// certificates.
    merchants: HashMap<String, Arc<WeChat>>,
    /// The appids in the order they were added; the first is the default.
    app_order: Vec<String>,
    /// Merchants that take no new orders.
    disabled: HashSet<String>,
    /// Providers' sub-merchants that take no new orders: (sp_mchid, sub_mchid).
    disabled_subs: HashSet<(String, String)>,
}

impl Directory {
    /// Adds a mini program and its clients (the merchant's, bound to the appid). The first one
    /// added is the default; a merchant's first mini program gives its notification clients.
    pub fn add_app(&mut self, wechat: WeChat) {
        let wechat = Arc::new(wechat);
        self.merchants
            .entry(wechat.mchid.clone())
            .or_insert_with(|| wechat.clone());
        if self
            .apps
            .insert(wechat.appid.clone(), wechat.clone())
            .is_none()
        {
            self.app_order.push(wechat.appid.clone());
        }
    }

    /// Marks a merchant as taking no new orders.
    pub fn disable_merchant(&mut self, mchid: &str) {
        self.disabled.insert(mchid.to_owned());
    }

    /// Marks a provider's sub-merchant as taking no new orders.
    pub fn disable_sub_merchant(&mut self, sp_mchid: &str, sub_mchid: &str) {
        self.disabled_subs
            .insert((sp_mchid.to_owned(), sub_mchid.to_owned()));
    }

    /// Sets a merchant's own clients (not bound to a mini program of a sub-merchant; a
    /// provider's are bound to its `sp_appid`): its notifications, bills and the orders of mini
    /// programs that moved away. Replaces those [`Directory::add_app`] took from its first mini
    /// program.
    pub fn add_merchant(&mut self, wechat: WeChat) {
        self.merchants
            .insert(wechat.mchid.clone(), Arc::new(wechat));
    }

    /// How many mini programs.
    #[must_use]
    pub fn app_count(&self) -> usize {
        self.apps.len()
    }

    /// How many merchants.
    #[must_use]
    pub fn merchant_count(&self) -> usize {
        self.merchants.len()
    }
}

/// The current [`Directory`], shared by the requests and the jobs. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Registry {
    current: Arc<RwLock<Arc<Directory>>>,
    /// WeChat's cached answers about each mini program (they outlive directory changes).
    facts: Arc<crate::core::mp_facts::MpFacts>,
}

impl Registry {
    /// A registry of one mini program and its merchant.
    #[must_use]
    pub fn single(wechat: WeChat) -> Self {
        let mut directory = Directory::default();
        directory.add_app(wechat);
        Self::new(directory)
    }

    /// A registry holding `directory`.
    #[must_use]
    pub fn new(directory: Directory) -> Self {
        Registry {
            current: Arc::new(RwLock::new(Arc::new(directory))),
            facts: Arc::default(),
        }
    }

    /// WeChat's cached answers about each mini program (express companies, trade management).
    #[must_use]
    pub fn facts(&self) -> &crate::core::mp_facts::MpFacts {
        &self.facts
    }

    /// Replaces the directory (requests in progress keep the one they read).
    pub fn replace(&self, directory: Directory) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(directory);
    }

    fn now(&self) -> Arc<Directory> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The default mini program's clients (the first registered): the old notify URLs, the
    /// banner, a login that names no mini program when only one is registered.
    ///
    /// # Panics
    /// Never: a registry always holds at least one mini program.
    #[must_use]
    pub fn default_app(&self) -> Arc<WeChat> {
        let now = self.now();
        let first = now.app_order.first().expect("a registry is never empty");
        now.apps[first].clone()
    }

    /// The clients of a mini program.
    ///
    /// # Errors
    /// [`RouteError::UnknownApp`].
    pub fn app(&self, appid: &str) -> Result<Arc<WeChat>, RouteError> {
        self.now()
            .apps
            .get(appid)
            .cloned()
            .ok_or_else(|| RouteError::UnknownApp(appid.to_owned()))
    }

    /// The mini program a login names, or the only one registered.
    ///
    /// # Errors
    /// [`RouteError::UnknownApp`], or [`RouteError::AppRequired`] when none is named and
    /// several are registered.
    pub fn app_or_only(&self, appid: Option<&str>) -> Result<Arc<WeChat>, RouteError> {
        match appid {
            Some(appid) => self.app(appid),
            None => {
                let now = self.now();
                match now.app_order.as_slice() {
                    [only] => Ok(now.apps[only].clone()),
                    _ => Err(RouteError::AppRequired),
                }
            }
        }
    }

    /// The clients that take a new order of a mini program.
    ///
    /// # Errors
    /// [`RouteError::UnknownApp`], [`RouteError::MerchantDisabled`].
    pub fn for_new_order(&self, appid: &str) -> Result<Arc<WeChat>, RouteError> {
        let now = self.now();
        let wechat = now
            .apps
            .get(appid)
            .cloned()
            .ok_or_else(|| RouteError::UnknownApp(appid.to_owned()))?;
        if now.disabled.contains(&wechat.mchid) {
            return Err(RouteError::MerchantDisabled(wechat.mchid.clone()));
        }
        if let Some(p) = &wechat.partner
            && now
                .disabled_subs
                .contains(&(wechat.mchid.clone(), p.sub_mchid.clone()))
        {
            return Err(RouteError::MerchantDisabled(p.sub_mchid.clone()));
        }
        Ok(wechat)
    }

    /// The clients of a merchant (its notification keys).
    ///
    /// # Errors
    /// [`RouteError::UnknownMerchant`].
    pub fn merchant(&self, mchid: &str) -> Result<Arc<WeChat>, RouteError> {
        self.now()
            .merchants
            .get(mchid)
            .cloned()
            .ok_or_else(|| RouteError::UnknownMerchant(mchid.to_owned()))
    }

    /// The clients an existing order is handled with: its mini program's, when that still pays
    /// through the order's merchant; otherwise the order's merchant's (a mini program moved to
    /// another merchant leaves its old orders with the old one). A disabled merchant still
    /// settles its orders.
    ///
    /// # Errors
    /// [`RouteError::OrderUnroutable`] when the order's merchant is gone.
    pub fn for_order(&self, order: &Order) -> Result<Arc<WeChat>, RouteError> {
        let now = self.now();
        let sub_mchid = |w: &WeChat| w.partner.as_ref().map(|p| p.sub_mchid.clone());
        if let Some(app) = now.apps.get(&order.appid)
            && app.mchid == order.mchid
            && sub_mchid(app) == order.sub_mchid
        {
            return Ok(app.clone());
        }
        let unroutable = || RouteError::OrderUnroutable {
            out_trade_no: order.out_trade_no.clone(),
            appid: order.appid.clone(),
            mchid: order.mchid.clone(),
        };
        let merchant = now.merchants.get(&order.mchid).ok_or_else(unroutable)?;
        match &order.sub_mchid {
            // A sub-merchant's order: the provider's clients naming it.
            Some(sub) => merchant
                .for_sub_merchant(&order.appid, sub, merchant.mp.clone())
                .map(Arc::new)
                .ok_or_else(unroutable),
            None if merchant.appid == order.appid && merchant.partner.is_none() => {
                Ok(merchant.clone())
            }
            None => Ok(Arc::new(
                merchant.for_app(&order.appid, merchant.mp.clone()),
            )),
        }
    }

    /// Every merchant's clients, in no particular order (the jobs that run per merchant).
    #[must_use]
    pub fn merchants(&self) -> Vec<Arc<WeChat>> {
        self.now().merchants.values().cloned().collect()
    }

    /// How many mini programs and merchants are registered.
    #[must_use]
    pub fn counts(&self) -> (usize, usize) {
        let now = self.now();
        (now.apps.len(), now.merchants.len())
    }
}

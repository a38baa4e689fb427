// @ts-check
// DevTools against a local sandbox (`wxpay serve` without a real merchant) only. There WeChat's
// own wx.login codes and payments mean nothing to the simulator that plays WeChat, so the login
// code comes from the simulator's users and the cashier is a modal whose "确认支付" posts the
// server's wx.requestPayment object to the simulator, which checks paySign as WeChat does: what
// the web console's emulator does. WeChat's 确认收款 page is a modal too, whose "收款" posts the
// wx.requestMerchantTransfer object to the simulator (POST /sim/transfers/confirm). The server has no /sim routes outside sandbox mode, and a
// released version refuses this mode: it cannot pay for real by mistake.

const OPENID_KEY = 'wxpay.sandbox.openid';
// The user's own credential, which the simulator answers with a new user and requires (header
// X-Sim-User-Key) for that user's later login codes: without it nobody else can log in as them.
const USER_KEY = 'wxpay.sandbox.user_key';

/**
 * @param {string} baseUrl the sandbox server
 * @returns {import('./wxpay-client').WeChat}
 */
function sandboxWechat(baseUrl) {
  const base = baseUrl.replace(/\/+$/, '');

  /**
   * @param {string} path
   * @param {object} data
   * @param {Record<string, string>} [headers] more request headers
   * @returns {Promise<{ statusCode: number, data: any }>}
   */
  function post(path, data, headers = {}) {
    return new Promise((resolve, reject) => {
      wx.request({
        url: base + path,
        method: 'POST',
        data,
        header: { 'content-type': 'application/json', ...headers },
        timeout: 10000,
        success: (res) => resolve({ statusCode: res.statusCode, data: res.data }),
        fail: (err) => reject(new Error(err.errMsg)),
      });
    });
  }

  function refuseRelease() {
    if (wx.getAccountInfoSync().miniProgram.envVersion === 'release') {
      throw new Error('the sandbox WeChat is for development: set sandbox: false in config.js');
    }
  }

  return {
    async login() {
      refuseRelease();
      const openid = wx.getStorageSync(OPENID_KEY);
      const userKey = wx.getStorageSync(USER_KEY);
      let res = openid && userKey
        ? await post(`/sim/users/${encodeURIComponent(openid)}/code`, {}, { 'X-Sim-User-Key': userKey })
        : null;
      // Unknown after the sandbox lost its state (or a key kept from before keys existed): a new user.
      if (!res || res.statusCode !== 200) {
        res = await post('/sim/users', {});
        if (res.statusCode === 200 && res.data && res.data.user_key) wx.setStorageSync(USER_KEY, res.data.user_key);
      }
      if (res.statusCode !== 200 || !res.data || !res.data.code) {
        throw new Error(`the sandbox gave no login code (HTTP ${res.statusCode})`);
      }
      wx.setStorageSync(OPENID_KEY, res.data.openid);
      return res.data.code;
    },

    async requestPayment(payment) {
      refuseRelease();
      const confirmed = await new Promise((resolve) => {
        wx.showModal({
          title: '模拟微信支付',
          content: '沙箱环境：确认后由模拟器校验签名并完成支付',
          confirmText: '确认支付',
          cancelText: '取消',
          success: (res) => resolve(res.confirm),
          fail: () => resolve(false),
        });
      });
      if (!confirmed) return { ok: false, cancelled: true, errMsg: 'requestPayment:fail cancel' };
      try {
        const res = await post('/sim/pay', { ...payment, openid: wx.getStorageSync(OPENID_KEY) });
        const errMsg = (res.data && res.data.errMsg) || `requestPayment:fail HTTP ${res.statusCode}`;
        return errMsg === 'requestPayment:ok' ? { ok: true } : { ok: false, cancelled: false, errMsg };
      } catch (err) {
        return { ok: false, cancelled: false, errMsg: `requestPayment:fail ${/** @type {Error} */ (err).message}` };
      }
    },

    async requestMerchantTransfer(object) {
      refuseRelease();
      const confirmed = await new Promise((resolve) => {
        wx.showModal({
          title: '模拟确认收款',
          content: '沙箱环境：确认后由模拟器校验并完成转账',
          confirmText: '收款',
          cancelText: '取消',
          success: (res) => resolve(res.confirm),
          fail: () => resolve(false),
        });
      });
      if (!confirmed) return { ok: false, cancelled: true, errMsg: 'requestMerchantTransfer:fail cancel' };
      try {
        const res = await post('/sim/transfers/confirm', { ...object, openid: wx.getStorageSync(OPENID_KEY) });
        const errMsg = (res.data && res.data.errMsg) || `requestMerchantTransfer:fail HTTP ${res.statusCode}`;
        return errMsg === 'requestMerchantTransfer:ok' ? { ok: true } : { ok: false, cancelled: false, errMsg };
      } catch (err) {
        return { ok: false, cancelled: false, errMsg: `requestMerchantTransfer:fail ${/** @type {Error} */ (err).message}` };
      }
    },
  };
}

module.exports = { sandboxWechat };

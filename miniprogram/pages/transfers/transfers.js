// @ts-check
// 待收款 (money for you): the shop's transfers to the user (商家转账), waiting ones first, each with
// its amount, the merchant's remark and its state. "收款" on a waiting one asks the server for the
// wx.requestMerchantTransfer object and opens WeChat's 确认收款 page; WeChat's "ok" only says the
// page was shown, so the server is then asked until the transfer is final (utils/wxpay-client.js).
const client = require('../../utils/shop');
const { yuan, dateTime, errorText, transferStatusText, transferFailReason } = require('../../utils/format');

/** @typedef {import('../../utils/wxpay-client').Transfer} Transfer */
/** @typedef {import('../../utils/wxpay-client').ReceiveResult} ReceiveResult */

/**
 * @typedef {object} TransferView
 * @property {string} no
 * @property {string} status
 * @property {string} statusText
 * @property {string} amount
 * @property {string} remark
 * @property {boolean} canConfirm
 * @property {string} created
 * @property {string} finished
 */

/** @param {Transfer} x @returns {TransferView} */
function view(x) {
  return {
    no: x.out_bill_no,
    status: x.status,
    statusText: transferStatusText(x.status),
    amount: yuan(x.amount_fen),
    remark: x.remark,
    canConfirm: x.can_confirm,
    created: dateTime(x.created_at),
    finished: dateTime(x.finished_at),
  };
}

/**
 * What the user is told when a transfer cannot be received.
 * @param {ReceiveResult} result a `failed` one
 */
function failedText(result) {
  if (result.transfer && result.transfer.status === 'FAIL') return '转账失败，请联系商家';
  return transferFailReason(result.errMsg);
}

Component({
  data: {
    loading: true,
    /** The list could not be loaded. */
    loadError: '',
    /** What went wrong with the last "收款". */
    error: '',
    /** What the last "收款" left to wait for. */
    notice: '',
    /** @type {TransferView[]} */
    transfers: [],
    /** The transfer being received. */
    busy: '',
  },
  methods: {
    onShow() {
      return this.reload();
    },
    onPullDownRefresh() {
      return this.reload().then(() => wx.stopPullDownRefresh());
    },
    async reload() {
      this.setData({ loading: this.data.transfers.length === 0, loadError: '' });
      try {
        const transfers = await client.transfers();
        this.setData({ loading: false, transfers: transfers.map(view) });
      } catch (err) {
        this.setData({ loading: false, loadError: errorText(err) });
      }
    },
    /** @param {WechatMiniprogram.BaseEvent} e */
    async receive(e) {
      if (this.data.busy) return;
      const no = String(e.currentTarget.dataset.no);
      this.setData({ busy: no, error: '', notice: '' });
      /** @type {ReceiveResult} */
      let result;
      try {
        result = await client.receive(no);
      } catch (err) {
        const code = err && typeof err === 'object' && 'code' in err ? String(err.code) : '';
        this.setData({ busy: '', error: code === 'not_found' ? '这笔转账不存在' : errorText(err) });
        return this.reload();
      }
      this.setData({ busy: '' });
      if (result.status === 'received') {
        wx.showToast({ title: '已到账', icon: 'success' });
      } else if (result.status === 'cancelled') {
        wx.showToast({ title: '已取消收款', icon: 'none' });
      } else if (result.status === 'confirming') {
        this.setData({ notice: '已确认收款，微信正在处理，请稍后刷新查看' });
      } else {
        this.setData({ error: failedText(result) });
      }
      return this.reload();
    },
  },
});

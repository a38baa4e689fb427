// @ts-check
const client = require('./utils/shop');
const receipt = require('./utils/receipt');

App({
  onLaunch() {
    // Logged in early so that the first order does not wait for it; a stored session is used
    // as it is (the server says when it expired, and the client then logs in again silently).
    if (!client.hasSession()) {
      client.login().catch(() => {
        // No network yet: the first request that needs a session logs in.
      });
    }
  },
  /** @param {WechatMiniprogram.App.LaunchShowOption} options */
  onShow(options) {
    // Back from WeChat's confirm-receipt component: its answer is in referrerInfo.extraData.
    // Kept for the order's page, whose onShow follows this one and asks the server again.
    receipt.accept(options);
  },
});

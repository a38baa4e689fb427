// @ts-check
// The one place to configure: where `wxpay serve` answers, and whether it is a sandbox.
module.exports = {
  // In DevTools against a local sandbox: `http://127.0.0.1:8080`, with "不校验合法域名" ticked
  // (project.config.json: urlCheck false). For a real phone and for release: the server's HTTPS
  // origin, registered as a "request 合法域名" in the mini program's admin console
  // (mp.weixin.qq.com → 开发管理 → 开发设置 → 服务器域名).
  baseUrl: 'http://127.0.0.1:8080',
  // true against a sandbox server: login codes and payments come from its simulator instead of
  // WeChat (utils/sandbox-wechat.js). false against WeChat, and always in a release.
  sandbox: true,
  // One wx.request, in milliseconds (WeChat's own default is 60 s: far too long for a shop).
  timeoutMs: 10000,
};

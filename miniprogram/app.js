// @ts-check
const client = require('./utils/shop');

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
});

// The one Chromium launch configuration of the real-browser tests: Debian's chromium,
// headless, with the flags that keep it off this machine's closed network.
export const CHROMIUM_PATH = process.env.APIGW_WS_CHROMIUM || '/usr/bin/chromium';

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

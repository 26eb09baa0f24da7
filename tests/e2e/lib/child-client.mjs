// A socket.io client in its own process, for tests that kill a client abruptly.
// usage: node child-client.mjs VERSION URL TRANSPORTS_JSON [NSP]
// Prints "connected" on stdout once connected, then idles until killed.
import { connect } from './clients.mjs';

const [version, url, transports, nsp = '/'] = process.argv.slice(2);
const c = connect(version, url, { transports: JSON.parse(transports), nsp, timeout: 10000 });
c.connected().then(
  () => process.stdout.write('connected\n'),
  (e) => {
    process.stderr.write(`connect failed: ${e.message}\n`);
    process.exit(2);
  },
);
setInterval(() => {}, 1 << 30);

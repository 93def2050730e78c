// Preload (node --import) for third-party servers started by the tests: every
// listen() binds 127.0.0.1 (whatever host the server asked for; port 0 when
// PORT=0), and the bound port is printed as "LISTENING <port>" on stdout.
import net from 'node:net';

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function patchedListen(...args) {
  let port = 0;
  let cb;
  if (typeof args[args.length - 1] === 'function') cb = args.pop();
  if (typeof args[0] === 'object' && args[0] !== null) port = args[0].port ?? 0;
  else if (args[0] !== undefined) port = Number(args[0]);
  this.once('listening', () => process.stdout.write(`LISTENING ${this.address().port}\n`));
  return listen.call(this, port, '127.0.0.1', cb);
};
setTimeout(() => process.exit(0), 10 * 60 * 1000).unref();  // never outlive a test run

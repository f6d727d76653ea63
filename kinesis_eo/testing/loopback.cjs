// Preloaded with `node -r` into kinesis-mock, which binds 0.0.0.0 and has no
// host setting: rewrite every listen() to 127.0.0.1 so that the emulator is
// never reachable from outside this machine.
'use strict';
const net = require('net');
const orig = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const cb = args.find((a) => typeof a === 'function');
  let opts = args[0];
  if (typeof opts !== 'object' || opts === null) opts = { port: Number(opts) };
  opts = Object.assign({}, opts, { host: '127.0.0.1' });
  return cb ? orig.call(this, opts, cb) : orig.call(this, opts);
};

// Interoperability harness: drives the official libsignal client library from pytest.
//
// Usage: node harness.js <package>   (an npm alias of package.json: libsignal-072, -090, -092, -103)
//
// Protocol: one JSON object per line on stdin, one JSON reply per line on stdout.
// Bytes travel as lowercase hex. Every reply is {"ok": true, ...} or {"ok": false, "error": "..."}.
// Parties, their keys and their sessions live in memory stores inside this process only.
// libsignal is AGPL-3.0: this program is a test-time tool and is never part of the e2e package.
'use strict';

const readline = require('readline');

const PACKAGES = ['libsignal-072', 'libsignal-090', 'libsignal-092', 'libsignal-103'];
const pkg = process.argv[2];
if (!PACKAGES.includes(pkg)) {
  process.stderr.write(`usage: node harness.js ${PACKAGES.join('|')}\n`);
  process.exit(2);
}
const S = require(pkg);

// The session calls changed shape across versions: 0.92 added the sender's own address to
// encrypting and to decrypting a prekey message, 0.103 to processing a bundle and to decrypting
// any message. `me` is the calling party's own address.
const V = Number(pkg.slice(-3));
const api = {
  processBundle: (bundle, to, me, sessions, identities) => (V >= 103
    ? S.processPreKeyBundle(bundle, to, me, sessions, identities)
    : S.processPreKeyBundle(bundle, to, sessions, identities)),
  encrypt: (pt, to, me, sessions, identities) => (V >= 92
    ? S.signalEncrypt(pt, to, me, sessions, identities)
    : S.signalEncrypt(pt, to, sessions, identities)),
  decrypt: (msg, from, me, sessions, identities) => (V >= 103
    ? S.signalDecrypt(msg, from, me, sessions, identities)
    : S.signalDecrypt(msg, from, sessions, identities)),
  decryptPreKey: (msg, from, me, p) => (V >= 92
    ? S.signalDecryptPreKey(msg, from, me, p.sessions, p.identities, p.prekeys, p.signed, p.kyber)
    : S.signalDecryptPreKey(msg, from, p.sessions, p.identities, p.prekeys, p.signed, p.kyber)),
};

const hex = (b) => Buffer.from(b).toString('hex');
const unhex = (s) => Buffer.from(s, 'hex');
const keyOf = (address) => `${address.name()}.${address.deviceId()}`;
const sameKey = (a, b) => Buffer.from(a.serialize()).equals(Buffer.from(b.serialize()));

class Identities extends S.IdentityKeyStore {
  constructor(pair, regId) {
    super();
    this.pair = pair;
    this.regId = regId;
    this.known = new Map();
  }
  async getIdentityKey() { return this.pair.privateKey; }
  async getLocalRegistrationId() { return this.regId; }
  async saveIdentity(address, key) {
    const k = keyOf(address);
    const old = this.known.get(k);
    this.known.set(k, key);
    return old !== undefined && !sameKey(old, key) ? 1 : 0;
  }
  async isTrustedIdentity(address, key) {
    const old = this.known.get(keyOf(address));
    return old === undefined || sameKey(old, key);
  }
  async getIdentity(address) { return this.known.get(keyOf(address)) || null; }
}

class Sessions extends S.SessionStore {
  constructor() { super(); this.map = new Map(); }
  // Records are kept as libsignal's own objects (as its in-memory test stores do).
  async saveSession(address, record) { this.map.set(keyOf(address), record); }
  async getSession(address) { return this.map.get(keyOf(address)) || null; }
  async getExistingSessions(addresses) {
    return addresses.map((a) => this.map.get(keyOf(a))).filter((r) => r !== undefined);
  }
  serialized(key) {
    const r = this.map.get(key);
    return r === undefined ? undefined : r.serialize();
  }
}

class PreKeys extends S.PreKeyStore {
  constructor() { super(); this.map = new Map(); }
  async savePreKey(id, record) { this.map.set(id, record.serialize()); }
  async getPreKey(id) {
    const raw = this.map.get(id);
    if (raw === undefined) throw new Error(`no prekey ${id}`);
    return S.PreKeyRecord.deserialize(raw);
  }
  async removePreKey(id) { this.map.delete(id); }
}

class SignedPreKeys extends S.SignedPreKeyStore {
  constructor() { super(); this.map = new Map(); }
  async saveSignedPreKey(id, record) { this.map.set(id, record.serialize()); }
  async getSignedPreKey(id) {
    const raw = this.map.get(id);
    if (raw === undefined) throw new Error(`no signed prekey ${id}`);
    return S.SignedPreKeyRecord.deserialize(raw);
  }
}

class KyberPreKeys extends S.KyberPreKeyStore {
  constructor() { super(); this.map = new Map(); this.used = []; }
  async saveKyberPreKey(id, record) { this.map.set(id, record.serialize()); }
  async getKyberPreKey(id) {
    const raw = this.map.get(id);
    if (raw === undefined) throw new Error(`no kyber prekey ${id}`);
    return S.KyberPreKeyRecord.deserialize(raw);
  }
  async markKyberPreKeyUsed(id) { this.used.push(id); }
}

const parties = new Map();

function party(name) {
  const p = parties.get(name);
  if (p === undefined) throw new Error(`unknown party ${name}`);
  return p;
}

function bundleJson(p, b) {
  return {
    registration_id: b.registration_id,
    device_id: 1,
    prekey_id: b.prekey_id,
    prekey: b.prekey === null ? null : hex(b.prekey.serialize()),
    signed_prekey_id: b.signed_prekey_id,
    signed_prekey: hex(b.signed_prekey.serialize()),
    signed_prekey_signature: hex(b.signed_prekey_signature),
    identity_key: hex(p.pair.publicKey.serialize()),
    kyber_prekey_id: b.kyber_prekey_id,
    kyber_prekey: b.kyber_prekey === null ? null : hex(b.kyber_prekey.serialize()),
    kyber_prekey_signature: b.kyber_signature === null ? null : hex(b.kyber_signature),
  };
}

const commands = {
  async version() {
    return { version: require(`${pkg}/package.json`).version };
  },

  // Safety numbers (e2e/fingerprint.py cross-check): libsignal's displayable and scannable
  // fingerprints for two identifiers and 33-byte identity keys, and its compare of two codes.
  async fingerprint({ iterations, version, local_id: lid, local_key: lkey, remote_id: rid,
                      remote_key: rkey, scanned }) {
    const fp = S.Fingerprint.new(iterations, version, unhex(lid),
      S.PublicKey.deserialize(unhex(lkey)), unhex(rid), S.PublicKey.deserialize(unhex(rkey)));
    const scan = fp.scannableFingerprint();
    const out = { displayable: fp.displayableFingerprint().toString(), scannable: hex(scan.toBuffer()) };
    if (scanned !== undefined) {
      out.matches = scan.compare(S.ScannableFingerprint._fromBuffer(unhex(scanned)));
    }
    return out;
  },

  // A new party with a fresh identity key pair and registration id.
  async init({ party: name, registration_id: regId }) {
    const pair = S.IdentityKeyPair.generate();
    const p = {
      pair,
      regId,
      addr: S.ProtocolAddress.new(name, 1),
      identities: new Identities(pair, regId),
      sessions: new Sessions(),
      prekeys: new PreKeys(),
      signed: new SignedPreKeys(),
      kyber: new KyberPreKeys(),
    };
    parties.set(name, p);
    return { identity_key: hex(pair.publicKey.serialize()) };
  },

  // Generate and store a prekey bundle: a signed prekey, a Kyber-1024 prekey (unless
  // kyber=false) and a one-time prekey (unless one_time=false). Returns its public fields.
  async bundle({ party: name, prekey_id: preId, signed_prekey_id: spkId, kyber_prekey_id: kId,
                 one_time: oneTime = true, kyber = true }) {
    const p = party(name);
    const spk = S.PrivateKey.generate();
    const spkSig = p.pair.privateKey.sign(spk.getPublicKey().serialize());
    await p.signed.saveSignedPreKey(spkId,
      S.SignedPreKeyRecord.new(spkId, Date.now(), spk.getPublicKey(), spk, spkSig));
    let prekey = null;
    if (oneTime) {
      const opk = S.PrivateKey.generate();
      await p.prekeys.savePreKey(preId, S.PreKeyRecord.new(preId, opk.getPublicKey(), opk));
      prekey = opk.getPublicKey();
    }
    let kyberPk = null;
    let kyberSig = null;
    if (kyber) {
      const kp = S.KEMKeyPair.generate();
      kyberPk = kp.getPublicKey();
      kyberSig = p.pair.privateKey.sign(kyberPk.serialize());
      await p.kyber.saveKyberPreKey(kId, S.KyberPreKeyRecord.new(kId, Date.now(), kp, kyberSig));
    }
    return bundleJson(p, {
      registration_id: p.regId,
      prekey_id: oneTime ? preId : null,
      prekey,
      signed_prekey_id: spkId,
      signed_prekey: spk.getPublicKey(),
      signed_prekey_signature: spkSig,
      kyber_prekey_id: kyber ? kId : null,
      kyber_prekey: kyberPk,
      kyber_signature: kyberSig,
    });
  },

  // Start a session with `peer` from a bundle (e.g. one published by e2e).
  async process_bundle({ party: name, peer, bundle: b }) {
    const p = party(name);
    const args = [
      b.registration_id, b.device_id,
      b.prekey_id, b.prekey === null ? null : S.PublicKey.deserialize(unhex(b.prekey)),
      b.signed_prekey_id, S.PublicKey.deserialize(unhex(b.signed_prekey)),
      unhex(b.signed_prekey_signature), S.PublicKey.deserialize(unhex(b.identity_key)),
    ];
    if (b.kyber_prekey !== null) {
      args.push(b.kyber_prekey_id, S.KEMPublicKey.deserialize(unhex(b.kyber_prekey)),
        unhex(b.kyber_prekey_signature));
    }
    const bundle = S.PreKeyBundle.new(...args);
    await api.processBundle(bundle, S.ProtocolAddress.new(peer, 1), p.addr, p.sessions, p.identities);
    return {};
  },

  // Encrypt each plaintext; with records=true each reply also carries the session record
  // right after that message.
  async encrypt({ party: name, peer, plaintexts, records = false }) {
    const p = party(name);
    const address = S.ProtocolAddress.new(peer, 1);
    const out = [];
    for (const pt of plaintexts) {
      const m = await api.encrypt(unhex(pt), address, p.addr, p.sessions, p.identities);
      const item = { type: m.type(), body: hex(m.serialize()) };
      if (records) item.record = hex(p.sessions.serialized(keyOf(address)));
      out.push(item);
    }
    return { messages: out };
  },

  // Decrypt a list of {type, body}; each result is {plaintext} or {error}.
  async decrypt({ party: name, peer, messages, records = false }) {
    const p = party(name);
    const address = S.ProtocolAddress.new(peer, 1);
    const out = [];
    for (const { type, body } of messages) {
      try {
        let pt;
        if (type === S.CiphertextMessageType.PreKey) {
          pt = await api.decryptPreKey(S.PreKeySignalMessage.deserialize(unhex(body)), address,
            p.addr, p);
        } else {
          pt = await api.decrypt(S.SignalMessage.deserialize(unhex(body)), address, p.addr,
            p.sessions, p.identities);
        }
        const item = { plaintext: hex(pt) };
        if (records) item.record = hex(p.sessions.serialized(keyOf(address)));
        out.push(item);
      } catch (e) {
        out.push({ error: String(e && e.message ? e.message : e) });
      }
    }
    return { results: out };
  },

  // The serialized SessionRecord (libsignal's storage.proto RecordStructure) for `peer`.
  async session({ party: name, peer }) {
    const p = party(name);
    const raw = p.sessions.serialized(`${peer}.1`);
    return { record: raw === undefined ? null : hex(raw) };
  },

  async prekeys({ party: name }) {
    const p = party(name);
    return { one_time: [...p.prekeys.map.keys()], kyber_used: p.kyber.used };
  },
};

// -- benchmark workloads (benches/libsignal_peer.py) -----------------------------------------

async function benchPair(tag) {
  const a = `bench-a-${tag}`;
  const b = `bench-b-${tag}`;
  await commands.init({ party: a, registration_id: 101 });
  await commands.init({ party: b, registration_id: 202 });
  const bundle = await commands.bundle({ party: b, prekey_id: 1, signed_prekey_id: 2, kyber_prekey_id: 3 });
  await commands.process_bundle({ party: a, peer: b, bundle });
  const pa = party(a);
  const pb = party(b);
  const addrA = S.ProtocolAddress.new(a, 1);
  const addrB = S.ProtocolAddress.new(b, 1);
  const first = await api.encrypt(Buffer.from('hi'), addrB, addrA, pa.sessions, pa.identities);
  await api.decryptPreKey(S.PreKeySignalMessage.deserialize(first.serialize()), addrA, addrB, pb);
  const back = await api.encrypt(Buffer.from('hello'), addrA, addrB, pb.sessions, pb.identities);
  await api.decrypt(S.SignalMessage.deserialize(back.serialize()), addrB, addrA, pa.sessions,
    pa.identities);
  return { pa, pb, addrA, addrB };
}

const wire = (m) => m.serialize();
let benchTag = 0;

// Per-call nanoseconds of `count` calls of one workload; setup work is untimed, as in benches/.
commands.bench_workload = async ({ workload, size, count }) => {
  const pt = Buffer.alloc(size, 7);
  const times = [];
  const clock = () => process.hrtime.bigint();
  if (workload === 'setup') {
    for (let i = 0; i < count; i++) {
      const tag = `s${benchTag++}`;
      await commands.init({ party: `sa-${tag}`, registration_id: 11 });
      await commands.init({ party: `sb-${tag}`, registration_id: 22 });
      const bundle = await commands.bundle({ party: `sb-${tag}`, prekey_id: 1, signed_prekey_id: 2, kyber_prekey_id: 3 });
      const pa = party(`sa-${tag}`);
      const pb = party(`sb-${tag}`);
      const args = [bundle.registration_id, 1, bundle.prekey_id, S.PublicKey.deserialize(unhex(bundle.prekey)),
        bundle.signed_prekey_id, S.PublicKey.deserialize(unhex(bundle.signed_prekey)),
        unhex(bundle.signed_prekey_signature), S.PublicKey.deserialize(unhex(bundle.identity_key)),
        bundle.kyber_prekey_id, S.KEMPublicKey.deserialize(unhex(bundle.kyber_prekey)),
        unhex(bundle.kyber_prekey_signature)];
      const addrA = S.ProtocolAddress.new(`sa-${tag}`, 1);
      const addrB = S.ProtocolAddress.new(`sb-${tag}`, 1);
      const start = clock();
      await api.processBundle(S.PreKeyBundle.new(...args), addrB, addrA, pa.sessions, pa.identities);
      const m = await api.encrypt(pt, addrB, addrA, pa.sessions, pa.identities);
      await api.decryptPreKey(S.PreKeySignalMessage.deserialize(wire(m)), addrA, addrB, pb);
      times.push(Number(clock() - start));
      parties.delete(`sa-${tag}`);
      parties.delete(`sb-${tag}`);
    }
    return { ns: times };
  }
  const { pa, pb, addrA, addrB } = await benchPair(benchTag++);
  const turn = [[pa, addrB, pb, addrA], [pb, addrA, pa, addrB]];
  for (let i = 0; i < count; i++) {
    if (workload === 'encrypt') {
      const start = clock();
      wire(await api.encrypt(pt, addrB, addrA, pa.sessions, pa.identities));
      times.push(Number(clock() - start));
    } else if (workload === 'decrypt') {
      const body = wire(await api.encrypt(pt, addrB, addrA, pa.sessions, pa.identities));
      const start = clock();
      await api.decrypt(S.SignalMessage.deserialize(body), addrA, addrB, pb.sessions, pb.identities);
      times.push(Number(clock() - start));
    } else if (workload === 'oneway' || workload === 'ping_pong') {
      const [sp, saddr, rp, raddr] = turn[0];
      const start = clock();
      const body = wire(await api.encrypt(pt, saddr, raddr, sp.sessions, sp.identities));
      await api.decrypt(S.SignalMessage.deserialize(body), raddr, saddr, rp.sessions, rp.identities);
      times.push(Number(clock() - start));
      if (workload === 'ping_pong') turn.reverse();
    } else {
      throw new Error(`unknown workload ${workload}`);
    }
  }
  return { ns: times };
};


// -- worker mode for benches/peers.py (its module docstring defines the protocol) --------------
//   node harness.js libsignal-090 --worker
// prints {"ready": {workload: needs_setup}}, then answers each
// {"workload": W, "n": N, "how": [loop, cpu, cpu_per_call]} with {"t": seconds per call},
// timing a batch as benches/interleave.py's _batch does.

const PREEMPTED = 0.0002;
const wallNow = () => Number(process.hrtime.bigint()) / 1e9;

async function workerSides() {
  const pt = Buffer.alloc(256, 7);
  const one = async (tag) => {
    const { pa, pb, addrA, addrB } = await benchPair(tag);
    return {
      send: async (from) => {
        const [sp, saddr] = from === 'a' ? [pa, addrB] : [pb, addrA];
        return wire(await api.encrypt(pt, saddr, sp.addr, sp.sessions, sp.identities));
      },
      recv: async (to, body) => {
        const [rp, raddr] = to === 'b' ? [pb, addrA] : [pa, addrB];
        await api.decrypt(S.SignalMessage.deserialize(body), raddr, rp.addr, rp.sessions, rp.identities);
      },
    };
  };
  const enc = await one('w-enc');
  const dec = await one('w-dec');
  const ow = await one('w-ow');
  const pp = await one('w-pp');
  let turn = ['a', 'b'];
  let last = null;
  return {
    encrypt: { setup: null, target: async () => { await enc.send('a'); } },
    decrypt: { setup: async () => [await dec.send('a')], target: async (body) => { await dec.recv('b', body); } },
    oneway: { setup: null, target: async () => { await ow.recv('b', await ow.send('a')); } },
    ping_pong: {
      setup: null,
      target: async () => {
        const [from, to] = turn;
        await pp.recv(to, await pp.send(from));
        turn = [to, from];
      },
    },
    setup: {
      setup: async () => {
        if (last !== null) { parties.delete(last[0]); parties.delete(last[1]); }
        const tag = `ws${benchTag++}`;
        const a = `a-${tag}`;
        const b = `b-${tag}`;
        await commands.init({ party: a, registration_id: 11 });
        await commands.init({ party: b, registration_id: 22 });
        const bundle = await commands.bundle({ party: b, prekey_id: 1, signed_prekey_id: 2, kyber_prekey_id: 3 });
        last = [a, b];
        const args = [bundle.registration_id, 1, bundle.prekey_id,
          S.PublicKey.deserialize(unhex(bundle.prekey)), bundle.signed_prekey_id,
          S.PublicKey.deserialize(unhex(bundle.signed_prekey)), unhex(bundle.signed_prekey_signature),
          S.PublicKey.deserialize(unhex(bundle.identity_key)), bundle.kyber_prekey_id,
          S.KEMPublicKey.deserialize(unhex(bundle.kyber_prekey)), unhex(bundle.kyber_prekey_signature)];
        return [party(a), party(b), S.ProtocolAddress.new(a, 1), S.ProtocolAddress.new(b, 1), args];
      },
      target: async (pa, pb, addrA, addrB, args) => {
        await api.processBundle(S.PreKeyBundle.new(...args), addrB, addrA, pa.sessions, pa.identities);
        const m = await api.encrypt(pt, addrB, addrA, pa.sessions, pa.identities);
        await api.decryptPreKey(S.PreKeySignalMessage.deserialize(wire(m)), addrA, addrB, pb);
      },
    },
  };
}

// node has no thread CPU clock, and a process CPU clock would also count libsignal's own
// threads, so every call is timed on the wall clock; where the caller asks for CPU time, the
// calls that lost the CPU (PREEMPTED slower than the batch's median) are left out instead.
async function workerBatch(side, n, [loop, cpu, cpuPerCall]) {
  let times = [];
  for (let i = 0; i < n; i++) {
    const args = side.setup ? await side.setup() : [];
    const start = wallNow();
    await side.target(...args);
    times.push(wallNow() - start);
  }
  if ((cpu || cpuPerCall || loop) && n >= 3) {
    const limit = [...times].sort((x, y) => x - y)[Math.floor(n / 2)] + PREEMPTED;
    times = times.filter((t) => t <= limit);
  }
  return times.reduce((x, y) => x + y, 0) / times.length;
}

async function workerMain() {
  const sides = await workerSides();
  const ready = {};
  for (const [w, side] of Object.entries(sides)) ready[w] = side.setup !== null;
  process.stdout.write(`${JSON.stringify({ ready })}\n`);
  const lines = readline.createInterface({ input: process.stdin, terminal: false });
  for await (const line of lines) {
    const msg = JSON.parse(line);
    const t = await workerBatch(sides[msg.workload], msg.n, msg.how);
    process.stdout.write(`${JSON.stringify({ t })}\n`);
  }
}

if (process.argv[3] === '--worker') {
  workerMain().catch((e) => { process.stderr.write(`${e && e.stack ? e.stack : e}\n`); process.exit(1); });
} else {
  const rl = readline.createInterface({ input: process.stdin, terminal: false });
  let queue = Promise.resolve();
  rl.on('line', (line) => {
    queue = queue.then(async () => {
      let reply;
      try {
        const req = JSON.parse(line);
        const fn = commands[req.cmd];
        if (fn === undefined) throw new Error(`unknown command ${req.cmd}`);
        reply = { ok: true, ...(await fn(req)) };
      } catch (e) {
        reply = { ok: false, error: String(e && e.message ? e.message : e) };
      }
      process.stdout.write(`${JSON.stringify(reply)}\n`);
    });
  });
}

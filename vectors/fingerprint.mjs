// Records libsignal's own safety numbers (displayable + scannable) for fixed identities.
// Run: npm i @signalapp/libsignal-client@0.90.0 && node fingerprint.mjs > fingerprint.json
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
const require = createRequire(import.meta.url);
const SignalClient = require('@signalapp/libsignal-client');
const pkg = require('@signalapp/libsignal-client/package.json');

const hex = (b) => Buffer.from(b).toString('hex');
const fromHex = (h) => new Uint8Array(Buffer.from(h, 'hex'));
const enc = (s) => new Uint8Array(Buffer.from(s, 'utf8'));
// Fixed private keys: SHA-256 of a label, so anyone can rebuild them.
const priv = (label) => SignalClient.PrivateKey.deserialize(
  new Uint8Array(createHash('sha256').update(label).digest()));
const keyOf = (label) => priv(label).getPublicKey().serialize();

const ALICE = '0506863bc66d02b40d27b8d49ca7c09e9239236f9d7d25d6fcca5ce13c7064d868';
const BOB = '05f781b6fb32fed9ba1cf2de978d4d5da28dc34046ae814402b5c0dbd96fda907b';

const pairs = [
  ['libsignal-test-v2', 5200, 2, '+14152222222', fromHex(ALICE), '+14153333333', fromHex(BOB)],
  ['libsignal-test-v1', 5200, 1, '+14152222222', fromHex(ALICE), '+14153333333', fromHex(BOB)],
  ['customer-business', 5200, 2, 'alice', keyOf('e2e fingerprint vector: alice'), 'acme-support', keyOf('e2e fingerprint vector: acme')],
  ['business-customer', 5200, 2, 'acme-support', keyOf('e2e fingerprint vector: acme'), 'alice', keyOf('e2e fingerprint vector: alice')],
  ['same-name-diff-key', 5200, 2, 'bob', keyOf('e2e fingerprint vector: bob 1'), 'bob', keyOf('e2e fingerprint vector: bob 2')],
  ['utf8-names', 5200, 2, 'caf\u00e9-m\u00fcller', keyOf('e2e fingerprint vector: cafe'), '\u6771\u4eac-shop', keyOf('e2e fingerprint vector: tokyo')],
  ['empty-identifier', 5200, 2, '', keyOf('e2e fingerprint vector: empty 1'), 'x', keyOf('e2e fingerprint vector: empty 2')],
  ['iterations-1024', 1024, 2, 'alice', keyOf('e2e fingerprint vector: alice'), 'bob', keyOf('e2e fingerprint vector: bob 1')],
];

const cases = [];
for (const [name, iterations, version, lid, lkey, rid, rkey] of pairs) {
  const lpub = SignalClient.PublicKey.deserialize(lkey);
  const rpub = SignalClient.PublicKey.deserialize(rkey);
  const mine = SignalClient.Fingerprint.new(iterations, version, enc(lid), lpub, enc(rid), rpub);
  const theirs = SignalClient.Fingerprint.new(iterations, version, enc(rid), rpub, enc(lid), lpub);
  const wrong = SignalClient.Fingerprint.new(iterations, version, enc(rid), lpub, enc(lid), rpub);
  const ms = mine.scannableFingerprint();
  const ts = theirs.scannableFingerprint();
  cases.push({
    name, iterations, version,
    local_id: hex(enc(lid)), local_key: hex(lkey),
    remote_id: hex(enc(rid)), remote_key: hex(rkey),
    displayable: mine.displayableFingerprint().toString(),
    displayable_remote_view: theirs.displayableFingerprint().toString(),
    scannable: hex(ms.toBuffer()),
    scannable_remote_view: hex(ts.toBuffer()),
    compare_remote_view: ms.compare(ts),
    compare_self: ms.compare(ms),
    scannable_swapped_ids: hex(wrong.scannableFingerprint().toBuffer()),
    compare_swapped_ids: ms.compare(wrong.scannableFingerprint()),
  });
}
const doc = {
  concept: 'fingerprint',
  source: `${pkg.name}@${pkg.version} (Signal's official client library, Rust core via Node ` +
    `bindings), run under node ${process.version}: Fingerprint.new(iterations, version, ` +
    `localIdentifier, localKey, remoteIdentifier, remoteKey) for each case; ` +
    `displayableFingerprint().toString(), scannableFingerprint().toBuffer() and ` +
    `ScannableFingerprint.compare as recorded. Keys are libsignal's own test identities or ` +
    `PrivateKey.deserialize(SHA-256(label)).getPublicKey(); the script is vectors/fingerprint.mjs.`,
  cases,
};
process.stdout.write(JSON.stringify(doc, null, 1) + '\n');

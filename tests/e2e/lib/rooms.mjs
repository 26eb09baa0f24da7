// roomcast room helpers on top of the client wrapper (clients.mjs).
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { waitFor } from './server.mjs';

/** Longest room name roomcast accepts (chars). */
export const ROOM_MAX = 200;

/** Payloads of every `message` event the client got for `room`, in order. */
export function payloadsIn(client, room) {
  return client.events('message').filter(([, meta]) => meta?.room === room).map(([p]) => p);
}

/** emit('channel', rooms) with an ack and assert {ok:true}. */
export async function join(client, rooms) {
  const [ack] = await client.emitWithAck('channel', rooms);
  assert.deepEqual(ack, { ok: true }, `join ${JSON.stringify(rooms)} -> ${JSON.stringify(ack)}`);
}

/** emit('leave', rooms) with an ack and assert {ok:true}. */
export async function leave(client, rooms) {
  const [ack] = await client.emitWithAck('leave', rooms);
  assert.deepEqual(ack, { ok: true }, `leave ${JSON.stringify(rooms)} -> ${JSON.stringify(ack)}`);
}

/**
 * Publish a unique sentinel to `room` with `publish(payload)` and wait until `client` got it.
 * Messages published to the same broker before it have been delivered by then (order is kept).
 */
export async function sentinel(client, room, publish, { timeout = 5000 } = {}) {
  const s = `sentinel-${randomUUID()}`;
  await publish(s);
  await waitFor(() => payloadsIn(client, room).includes(s), { timeout, message: `sentinel in ${room}` });
  return s;
}

const short = (s) => (typeof s === 'string' && s.length > 60 ? `${JSON.stringify(s.slice(0, 40))}… (${s.length} chars)` : JSON.stringify(s));

/** Assert two payload lists are identical, with a compact message (payloads can be 10 kB). */
export function assertPayloads(got, want, what = 'payloads') {
  const g = got.map(short).join(', ');
  const w = want.map(short).join(', ');
  assert.ok(got.length === want.length, `${what}: got ${got.length} [${g}], want ${want.length} [${w}]`);
  got.forEach((p, i) => {
    if (p === want[i]) return;
    let d = 0;
    while (typeof p === 'string' && d < p.length && p[d] === want[i][d]) d++;
    assert.fail(`${what}[${i}]: got ${short(p)}, want ${short(want[i])} (first difference at char ${d})`);
  });
}

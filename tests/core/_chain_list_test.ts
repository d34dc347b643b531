// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import assert from "node:assert/strict";
import { Chain } from "../../src/core/_chain.ts";
import { ChainList } from "../../src/core/_chain_list.ts";

function order(list: ChainList): Chain[] {
  const chains: Chain[] = [];
  for (let chain = list.first; chain !== undefined; chain = chain.next) {
    chains.push(chain);
  }
  return chains;
}

Deno.test("ChainList keeps chains in the order they joined, and lets any leave", () => {
  const list = new ChainList();
  const [a, b, c, d] = [new Chain(), new Chain(), new Chain(), new Chain()];
  for (const chain of [a, b, c, d]) list.push(chain);
  assert.deepEqual(order(list), [a, b, c, d]);
  assert.equal(list.size, 4);

  list.remove(b); // from the middle
  list.remove(a); // the first
  list.remove(d); // the last
  assert.deepEqual(order(list), [c]);
  assert.deepEqual([list.first, list.last, list.size], [c, c, 1]);
  assert.deepEqual([a.previous, a.next, d.previous, d.next], [
    undefined,
    undefined,
    undefined,
    undefined,
  ]);

  list.remove(c);
  assert.deepEqual([list.first, list.last, list.size], [
    undefined,
    undefined,
    0,
  ]);
  list.push(a);
  assert.deepEqual(order(list), [a]);
});

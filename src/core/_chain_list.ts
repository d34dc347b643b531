// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// A list of chains linked through their own `previous` and `next` fields, so
// that a request joining or leaving it allocates nothing. A chain is in one
// list at most: the runner's open list while its handler runs, then its
// live list until it ends.

import type { Chain } from "./_chain.ts";

/** Chains in the order they joined, oldest first. */
export class ChainList {
  first: Chain | undefined = undefined;
  last: Chain | undefined = undefined;
  size = 0;

  push(chain: Chain): void {
    chain.previous = this.last;
    chain.next = undefined;
    if (this.last === undefined) this.first = chain;
    else this.last.next = chain;
    this.last = chain;
    this.size++;
  }

  remove(chain: Chain): void {
    const { previous, next } = chain;
    if (previous === undefined) this.first = next;
    else previous.next = next;
    if (next === undefined) this.last = previous;
    else next.previous = previous;
    chain.previous = chain.next = undefined;
    this.size--;
  }
}

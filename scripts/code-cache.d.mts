// Types of scripts/code-cache.mjs for the TypeScript that reads a shipped plugin file (bench, tests).
export function wrapSource(bundle: string): string
export function compose(name: string, source: string, cache: Buffer | undefined): string
/** SOURCE, CACHE and the Node version that made it, from a file made by compose(). */
export function extract(text: string): { source: string; cache: Buffer; node: string }
export function composeSeaMain(name: string): string
export function reusableCache(file: string, source: string): Buffer | undefined
export function trainCache(name: string, source: string, filename: string): Promise<Buffer | undefined>

// Lint: typescript-eslint with type information, for the bugs tsc does not catch — above all promises that
// nobody awaits or handles (a floating promise is a lost error, ARCHITECTURE's rules) and promises passed
// where a callback's return value is ignored. Part of `npm test` (scripts/test.sh); `npm run lint` alone.
import tseslint from 'typescript-eslint'

export default tseslint.config(
  { ignores: ['node_modules/**', 'dist/**', 'proto/gen/**', '.scratch/**', '.tap/**', 'tmp/**'] },
  {
    files: ['**/*.ts'],
    extends: [tseslint.configs.base],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      // node-tap runs subtests it is handed without an await (`t.test(...)` at a file's top level).
      '@typescript-eslint/no-floating-promises': ['error', { allowForKnownSafePromises: [{ from: 'package', name: 'PromiseWithSubtest', package: '@tapjs/core' }] }],
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/await-thenable': 'error',
      '@typescript-eslint/require-await': 'off',
      '@typescript-eslint/no-explicit-any': 'error',
    },
  },
)

// Writes ecma.json: for each pattern, which texts ECMA-262's RegExp (with
// the u flag, as JSON Schema validators run "pattern") finds it in — the
// reference TestPattern_ECMA checks the pattern automata against.
// Run: node gen.mjs > ecma.json
const patterns = [
  String.raw`^\s+$`, String.raw`^\S+$`, String.raw`^.$`, String.raw`^.+$`, String.raw`^[^a]$`, String.raw`^\d{2}$`,
  String.raw`^\w+$`, String.raw`^\W$`, String.raw`\u00e9`, String.raw`^[\u00e0-\u00ff]+$`, String.raw`^\p{L}+$`,
  String.raw`^\p{Lu}`, String.raw`^(?:ab|cd)+$`, String.raw`a|b`, String.raw`^[a-z]{2,}$`, String.raw`[.]`, String.raw`^\.$`,
  String.raw`^a*?b$`, String.raw`^(?<y>\d{4})-\d{2}$`, String.raw`^[\s\d]+$`, String.raw`^a[]b$`, String.raw`^a[^]b$`,
  String.raw`^\x41$`, String.raw`^\cJ$`, String.raw`\/`, String.raw`^\uD83D\uDE00$`, String.raw`^[^\s]*$`, String.raw`x$`,
  String.raw`^$`, String.raw``, String.raw`^(a|b)?c{0,2}$`, String.raw`[^\d\s]`, String.raw`^[\w.+-]+@[\w-]+\.\w+$`,
];
const texts = ['', 'a', 'ab', 'b', 'aab', 'abcd', 'cd', 'abab', 'c', 'acc', 'é', 'E', 'É', 'àÿ', '😀', '😀😀', ' ', '\u00a0',
  '\u2028', '\u3000', '\t', '\r', '\n', '\n\n', '1', '12', '123', 'abc', 'a1', '2024-11', '2024-1', '.', 'x.y', '/', 'A', 'AB',
  'x', 'yx', 'xy', 'a b', 'a\nb', 'a\rb', 'a.b', 'ab ', ' ab', 'ü', 'Zoë', 'first.last+tag@mail.example.com', 'a@b', 'a@b.c'];
const out = patterns.map((p) => {
  const re = new RegExp(p, 'u');
  return { pattern: p, matches: texts.filter((t) => re.test(t)) };
});
console.log(JSON.stringify({ texts, patterns: out }, null, 1));

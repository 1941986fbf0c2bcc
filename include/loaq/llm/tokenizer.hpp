// Byte-level BPE tokenizer (GPT-2 style) built from a GGUF file's tokenizer.ggml.* metadata
// (SmolLM2, Qwen2/Qwen2.5, GPT-2 and other models whose tokenizer.ggml.model is "gpt2").
//
// encode: split special (control) tokens out of the text, pre-tokenize each remaining span with
// the file's declared pre-tokenizer, map each piece's bytes to GPT-2's printable byte alphabet,
// merge by rank, look up ids. Supported pre-tokenizers (tokenizer.ggml.pre):
//   "gpt2"   GPT-2's regex   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   "smollm" every \p{N} character is first isolated (HF's Digits(individual_digits=true)),
//            then GPT-2's regex runs on the spans in between (as HF's Sequence does).
//   "qwen2"  Qwen2's regex   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}
//                            | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
// The regexes are implemented by hand, alternative by alternative, on code points.
//
// No normalization: Qwen2's tokenizer.json puts an NFC normalizer before its pre-tokenizer;
// this tokenizer, like llama.cpp, does not apply it, so text for a qwen2 file should already be
// NFC. A text that is not (e.g. "e" + U+0301 instead of U+00E9) still encodes to valid ids that
// decode back to it exactly, but to other ids than Hugging Face's, which encodes the NFC form.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../io/gguf.hpp"
#include "detail/unicode_ranges.hpp"

namespace loaq {
namespace llm {

namespace unicode {

enum class CharClass : std::uint8_t { Letter, Number, Space, Other };

// Oniguruma's \s on Unicode text: the White_Space property.
inline bool is_white_space(std::uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

inline CharClass classify(std::uint32_t c) {
  if (is_white_space(c)) return CharClass::Space;
  if (c < 0x80) {  // fast path for ASCII
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return CharClass::Letter;
    if (c >= '0' && c <= '9') return CharClass::Number;
    return CharClass::Other;
  }
  const CategoryRange* b = std::begin(kCategoryRanges);
  const CategoryRange* e = std::end(kCategoryRanges);
  const CategoryRange* it =
      std::upper_bound(b, e, c, [](std::uint32_t x, const CategoryRange& r) { return x < r.first; });
  if (it == b || c > (it - 1)->last) return CharClass::Other;
  return (it - 1)->kind == 'L' ? CharClass::Letter : CharClass::Number;
}

// One decoded code point and where its bytes are.
struct CodePoint {
  std::uint32_t cp;
  std::size_t begin, end;  // byte range in the text
};

// UTF-8 decode that never fails: each byte of an invalid or truncated sequence becomes its own
// pseudo code point U+FFFD (class Other), so arbitrary bytes still round-trip through BPE.
inline std::vector<CodePoint> decode_utf8(const std::string& s, std::size_t begin, std::size_t end) {
  std::vector<CodePoint> out;
  out.reserve(end - begin);
  std::size_t i = begin;
  while (i < end) {
    const auto b0 = std::uint8_t(s[i]);
    std::size_t n = b0 < 0x80 ? 1 : (b0 >> 5) == 6 ? 2 : (b0 >> 4) == 14 ? 3 : (b0 >> 3) == 30 ? 4 : 0;
    std::uint32_t cp = n == 1 ? b0 : n == 2 ? (b0 & 0x1F) : n == 3 ? (b0 & 0x0F) : (b0 & 0x07);
    bool ok = n != 0 && i + n <= end;
    for (std::size_t k = 1; ok && k < n; ++k) {
      const auto b = std::uint8_t(s[i + k]);
      ok = (b >> 6) == 2;
      cp = (cp << 6) | (b & 0x3F);
    }
    // Reject overlong forms, surrogates and values past U+10FFFF, like a strict decoder.
    static const std::uint32_t min_for_len[] = {0, 0, 0x80, 0x800, 0x10000};
    if (ok && (cp < min_for_len[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))) ok = false;
    if (!ok) {
      out.push_back({0xFFFD, i, i + 1});
      ++i;
    } else {
      out.push_back({cp, i, i + n});
      i += n;
    }
  }
  return out;
}

inline void append_utf8(std::string& s, std::uint32_t cp) {
  if (cp < 0x80) {
    s += char(cp);
  } else if (cp < 0x800) {
    s += char(0xC0 | (cp >> 6));
    s += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += char(0xE0 | (cp >> 12));
    s += char(0x80 | ((cp >> 6) & 0x3F));
    s += char(0x80 | (cp & 0x3F));
  } else {
    s += char(0xF0 | (cp >> 18));
    s += char(0x80 | ((cp >> 12) & 0x3F));
    s += char(0x80 | ((cp >> 6) & 0x3F));
    s += char(0x80 | (cp & 0x3F));
  }
}

}  // namespace unicode

class Tokenizer {
 public:
  // tokens: the vocabulary (id = index); merges: "left right" in rank order; token_types:
  // llama.cpp's (1 normal, 3 control, 4 user-defined; empty = all normal); pre: the
  // pre-tokenizer name. Throws std::invalid_argument for an unsupported or inconsistent setup.
  Tokenizer(std::vector<std::string> tokens, const std::vector<std::string>& merges,
            std::vector<std::int64_t> token_types, std::string pre)
      : tokens_(std::move(tokens)), pre_(std::move(pre)) {
    if (pre_ != "gpt2" && pre_ != "smollm" && pre_ != "qwen2")
      throw std::invalid_argument("tokenizer: unsupported pre-tokenizer '" + pre_ +
                                  "' (supported: gpt2, smollm, qwen2)");
    if (tokens_.empty()) throw std::invalid_argument("tokenizer: empty vocabulary");
    if (tokens_.size() > std::size_t(std::numeric_limits<int>::max()))
      throw std::invalid_argument("tokenizer: vocabulary too large");
    if (!token_types.empty() && token_types.size() != tokens_.size())
      throw std::invalid_argument("tokenizer: token_type has " + std::to_string(token_types.size()) +
                                  " entries for " + std::to_string(tokens_.size()) + " tokens");
    special_.assign(tokens_.size(), false);
    for (std::size_t i = 0; i < tokens_.size(); ++i) {
      // Later duplicates never win: the first id of a string is the one encode produces.
      ids_.emplace(tokens_[i], int(i));
      const bool special = !token_types.empty() && (token_types[i] == 3 || token_types[i] == 4);
      if (special && !tokens_[i].empty()) {
        special_[i] = true;
        specials_.push_back(int(i));
      }
    }
    // Longest first, so that matching picks the longest special token at a position.
    std::stable_sort(specials_.begin(), specials_.end(), [&](int a, int b) {
      return tokens_[std::size_t(a)].size() > tokens_[std::size_t(b)].size();
    });
    for (std::size_t r = 0; r < merges.size(); ++r) {
      const std::string& m = merges[r];
      const std::size_t sp = m.find(' ');
      if (sp == std::string::npos || sp == 0 || sp + 1 == m.size() ||
          m.find(' ', sp + 1) != std::string::npos)
        throw std::invalid_argument("tokenizer: merge " + std::to_string(r) + " '" + m +
                                    "' is not 'left right'");
      ranks_.emplace(m, int(r));  // first occurrence keeps the best rank
    }
    build_byte_maps();
  }

  // From tokenizer.ggml.{model,pre,tokens,merges,token_type,bos_token_id,eos_token_id}.
  static Tokenizer from_gguf(const loaq::io::GgufReader& g) {
    const std::string model = g.get_string("tokenizer.ggml.model");
    if (model != "gpt2")
      throw std::invalid_argument("tokenizer: model '" + model + "' is not byte-level BPE (gpt2)");
    std::vector<std::int64_t> types;
    if (g.has("tokenizer.ggml.token_type")) types = g.get_ints("tokenizer.ggml.token_type");
    Tokenizer t(g.get_strings("tokenizer.ggml.tokens"), g.get_strings("tokenizer.ggml.merges"),
                std::move(types), g.get_string("tokenizer.ggml.pre", "gpt2"));
    t.bos_id_ = t.checked_id(g, "tokenizer.ggml.bos_token_id");
    t.eos_id_ = t.checked_id(g, "tokenizer.ggml.eos_token_id");
    if (const int unk = t.checked_id(g, "tokenizer.ggml.unknown_token_id"); unk >= 0) t.unknown_id_ = unk;
    return t;
  }

  int vocab_size() const { return int(tokens_.size()); }
  int bos_id() const { return bos_id_; }  // -1 when the file names none
  int eos_id() const { return eos_id_; }
  // Stands for a byte that has no token (only possible in invalid UTF-8 for SmolLM2's vocabulary).
  int unknown_id() const { return unknown_id_; }
  const std::string& pre_tokenizer() const { return pre_; }
  // The vocabulary string of a token (in GPT-2's byte alphabet for normal tokens).
  const std::string& token(int id) const {
    check_id(id);
    return tokens_[std::size_t(id)];
  }
  bool is_special(int id) const { return id >= 0 && id < vocab_size() && special_[std::size_t(id)]; }

  // Text to ids. With parse_special, control tokens written in the text (e.g. "<|im_end|>")
  // become their ids, as Hugging Face tokenizers do by default; otherwise they are plain text.
  std::vector<int> encode(const std::string& text, bool parse_special = true) const {
    std::vector<int> out;
    std::unordered_map<std::string, std::vector<int>> cache;  // per call: pieces repeat a lot
    std::size_t start = 0;
    auto flush = [&](std::size_t end) {
      for (const auto& piece : pre_tokenize(text, start, end)) {
        const std::string bytes = text.substr(piece.first, piece.second - piece.first);
        auto it = cache.find(bytes);
        if (it == cache.end()) it = cache.emplace(bytes, bpe(bytes)).first;
        out.insert(out.end(), it->second.begin(), it->second.end());
      }
    };
    if (parse_special && !specials_.empty()) {
      for (std::size_t i = 0; i < text.size();) {
        const int s = special_at(text, i);
        if (s < 0) {
          ++i;
          continue;
        }
        flush(i);
        out.push_back(s);
        i += tokens_[std::size_t(s)].size();
        start = i;
      }
    }
    flush(text.size());
    return out;
  }

  // Ids to text. Throws std::out_of_range for an id outside the vocabulary.
  std::string decode(const std::vector<int>& ids) const {
    std::string out;
    for (int id : ids) {
      check_id(id);
      const std::string& t = tokens_[std::size_t(id)];
      if (special_[std::size_t(id)]) {
        out += t;
        continue;
      }
      for (const auto& c : unicode::decode_utf8(t, 0, t.size())) {
        auto it = unicode_to_byte_.find(c.cp);
        if (it != unicode_to_byte_.end())
          out += char(it->second);
        else  // not in the byte alphabet: keep the character itself
          out.append(t, c.begin, c.end - c.begin);
      }
    }
    return out;
  }

  // The pre-tokenizer's pieces of text[begin, end) as byte ranges (exposed for tests).
  std::vector<std::pair<std::size_t, std::size_t>> pre_tokenize(const std::string& text,
                                                                std::size_t begin,
                                                                std::size_t end) const {
    Pieces pieces;
    const std::vector<unicode::CodePoint> cps = unicode::decode_utf8(text, begin, end);
    std::vector<unicode::CharClass> cls(cps.size());
    for (std::size_t i = 0; i < cps.size(); ++i) cls[i] = unicode::classify(cps[i].cp);
    if (pre_ != "smollm") {
      split({cps, cls, cps.size()}, 0, pre_ == "qwen2" ? match_qwen2 : match_gpt2, pieces);
      return pieces;
    }
    // smollm: each number character alone, GPT-2's regex on the spans between them.
    std::size_t run = 0;
    for (std::size_t i = 0; i < cps.size(); ++i) {
      if (cls[i] != unicode::CharClass::Number) continue;
      split({cps, cls, i}, run, match_gpt2, pieces);
      pieces.emplace_back(cps[i].begin, cps[i].end);
      run = i + 1;
    }
    split({cps, cls, cps.size()}, run, match_gpt2, pieces);
    return pieces;
  }
  std::vector<std::string> pre_tokenize(const std::string& text) const {
    std::vector<std::string> out;
    for (const auto& p : pre_tokenize(text, 0, text.size()))
      out.push_back(text.substr(p.first, p.second - p.first));
    return out;
  }

 private:
  using CharClass = unicode::CharClass;

  using Pieces = std::vector<std::pair<std::size_t, std::size_t>>;

  // The code points [.., e) one regex pass runs over; reads past e see nothing.
  struct Span {
    const std::vector<unicode::CodePoint>& cps;
    const std::vector<CharClass>& cls;
    std::size_t e;
    std::uint32_t cp(std::size_t k) const { return k < e ? cps[k].cp : 0u; }
    bool is(std::size_t k, CharClass c) const { return k < e && cls[k] == c; }
    bool is_line_break(std::size_t k) const { return cp(k) == '\r' || cp(k) == '\n'; }
    std::size_t run_of(std::size_t k, CharClass c) const {
      while (is(k, c)) ++k;
      return k;
    }
    std::size_t run_of_line_breaks(std::size_t k) const {
      while (is_line_break(k)) ++k;
      return k;
    }
  };
  // A regex at code point i: where its match ends (> i; it always matches something).
  using Matcher = std::size_t (*)(const Span&, std::size_t);

  // Cuts code points [b, e) into pieces: at each position the first alternative that matches
  // wins, with the length the backtracking regex engine would give it.
  static void split(const Span& s, std::size_t b, Matcher match, Pieces& pieces) {
    for (std::size_t i = b; i < s.e;) {
      const std::size_t j = match(s, i);
      pieces.emplace_back(s.cps[i].begin, s.cps[j - 1].end);
      i = j;
    }
  }

  // 's|'t|'re|'ve|'m|'ll|'d at i: the end of the match, or i. fold_case is the (?i:...) of Qwen2's
  // regex as Hugging Face tokenizers (Oniguruma) applies it: ASCII case, plus U+017F LONG S,
  // which case-folds to 's' (an exhaustive check found no other code point).
  static std::size_t match_contraction(const Span& s, std::size_t i, bool fold_case) {
    if (s.cp(i) != '\'') return i;
    auto letter = [&](std::size_t k) -> std::uint32_t {
      const std::uint32_t c = s.cp(k);
      if (!fold_case) return c;
      if (c == 0x17F) return 's';
      return c >= 'A' && c <= 'Z' ? c | 0x20 : c;
    };
    const std::uint32_t c1 = letter(i + 1), c2 = letter(i + 2);
    if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return i + 2;
    if ((c1 == 'r' || c1 == 'v') && c2 == 'e') return i + 3;
    if (c1 == 'l' && c2 == 'l') return i + 3;
    return i;
  }

  // Past the U+0020 of ' ?X' when something follows it, so that X is tried on the next character.
  static std::size_t after_optional_space(const Span& s, std::size_t i) {
    return s.cp(i) == ' ' && i + 1 < s.e ? i + 1 : i;
  }

  // '\s+(?!\S)|\s+' at a whitespace character: the run, except that when a non-space follows,
  // its last character is left to prefix the next piece (unless the run is a single character).
  static std::size_t match_space_run(const Span& s, std::size_t i) {
    const std::size_t k = s.run_of(i, CharClass::Space);
    return k < s.e && k - i >= 2 ? k - 1 : k;
  }

  // GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  static std::size_t match_gpt2(const Span& s, std::size_t i) {
    if (const std::size_t j = match_contraction(s, i, false); j != i) return j;
    // The three ' ?X+' alternatives: an optional U+0020, then a run of one class.
    const std::size_t k = after_optional_space(s, i);
    if (!s.is(k, CharClass::Space)) return s.run_of(k, s.cls[k]);
    return match_space_run(s, i);
  }

  // Qwen2: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}
  //        | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
  static std::size_t match_qwen2(const Span& s, std::size_t i) {
    if (const std::size_t j = match_contraction(s, i, true); j != i) return j;
    // Letters, after at most one character that is no line break, letter or number (a space,
    // tab or punctuation mark joins the word; a line break never does).
    const CharClass c = s.cls[i];
    const bool joins = c != CharClass::Letter && c != CharClass::Number && !s.is_line_break(i);
    const std::size_t l = joins && s.is(i + 1, CharClass::Letter) ? i + 1 : i;
    if (s.is(l, CharClass::Letter)) return s.run_of(l, CharClass::Letter);
    if (c == CharClass::Number) return i + 1;  // one digit per piece
    // Punctuation after an optional space, with the line breaks right after it.
    const std::size_t k = after_optional_space(s, i);
    if (s.is(k, CharClass::Other)) return s.run_of_line_breaks(s.run_of(k, CharClass::Other));
    // Whitespace: '\s*[\r\n]+' backtracks to end right after the run's last line break.
    for (std::size_t q = s.run_of(i, CharClass::Space); q > i; --q)
      if (s.is_line_break(q - 1)) return q;
    return match_space_run(s, i);
  }

  // Merges the symbols of one piece by rank (lowest first; equal pairs left to right).
  std::vector<int> bpe(const std::string& bytes) const {
    std::vector<std::string> sym;
    sym.reserve(bytes.size());
    for (unsigned char c : bytes) sym.push_back(byte_to_unicode_[c]);
    std::string key;
    while (sym.size() > 1) {
      int best = std::numeric_limits<int>::max();
      std::size_t best_i = 0;
      for (std::size_t i = 0; i + 1 < sym.size(); ++i) {
        key.assign(sym[i]).append(1, ' ').append(sym[i + 1]);
        auto it = ranks_.find(key);
        if (it != ranks_.end() && it->second < best) {
          best = it->second;
          best_i = i;
        }
      }
      if (best == std::numeric_limits<int>::max()) break;
      // Merge every occurrence of the best pair, left to right, without overlaps.
      const std::string left = sym[best_i], right = sym[best_i + 1];
      std::vector<std::string> next;
      next.reserve(sym.size());
      for (std::size_t i = 0; i < sym.size(); ++i) {
        if (i + 1 < sym.size() && sym[i] == left && sym[i + 1] == right) {
          next.push_back(left + right);
          ++i;
        } else {
          next.push_back(std::move(sym[i]));
        }
      }
      sym.swap(next);
    }
    std::vector<int> ids;
    for (const std::string& s : sym) {
      auto it = ids_.find(s);
      if (it != ids_.end()) {
        ids.push_back(it->second);
        continue;
      }
      // A vocabulary without this merge result or byte: fall back to single characters, then
      // to the unknown id.
      for (const auto& c : unicode::decode_utf8(s, 0, s.size())) {
        auto jt = ids_.find(s.substr(c.begin, c.end - c.begin));
        ids.push_back(jt != ids_.end() ? jt->second : unknown_id_);
      }
    }
    return ids;
  }

  // The special token whose text starts at text[i], longest first; -1 if none.
  int special_at(const std::string& text, std::size_t i) const {
    for (int s : specials_) {
      const std::string& t = tokens_[std::size_t(s)];
      if (text.compare(i, t.size(), t) == 0) return s;
    }
    return -1;
  }

  // GPT-2's byte alphabet: printable bytes stand for themselves, the other 68 bytes are moved
  // to U+0100 and up so that every token is a printable string.
  void build_byte_maps() {
    std::uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      const std::uint32_t cp = printable ? std::uint32_t(b) : next++;
      unicode::append_utf8(byte_to_unicode_[b], cp);
      unicode_to_byte_[cp] = std::uint8_t(b);
    }
    auto it = ids_.find("<unk>");
    unknown_id_ = it != ids_.end() ? it->second : 0;
  }

  int checked_id(const loaq::io::GgufReader& g, const std::string& key) const {
    if (!g.has(key)) return -1;
    const std::uint64_t id = g.get_uint(key);
    if (id >= tokens_.size())
      throw loaq::io::format_error("tokenizer: " + key + " = " + std::to_string(id) +
                                   " is outside the vocabulary");
    return int(id);
  }
  void check_id(int id) const {
    if (id < 0 || id >= vocab_size())
      throw std::out_of_range("tokenizer: id " + std::to_string(id) + " outside the vocabulary of " +
                              std::to_string(vocab_size()));
  }

  std::vector<std::string> tokens_;
  std::string pre_;
  std::unordered_map<std::string, int> ids_;
  std::unordered_map<std::string, int> ranks_;
  std::vector<bool> special_;
  std::vector<int> specials_;  // ids of control/user-defined tokens, longest text first
  std::string byte_to_unicode_[256];
  std::unordered_map<std::uint32_t, std::uint8_t> unicode_to_byte_;
  int unknown_id_ = 0;
  int bos_id_ = -1, eos_id_ = -1;
};

}  // namespace llm
}  // namespace loaq

#include "engine/safetensors_file.h"

#include <cstring>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace silo::engine {
namespace {

using ::silo::testing::StatusIs;
using ::silo::testing::TempDir;
using ::testing::AnyOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

struct Entry {
  std::string name, dtype, shape;  // shape as JSON, e.g. "[2, 3]"
  std::string bytes;
};

// A safetensors file: header length, JSON header, data.
std::string Build(const std::vector<Entry>& entries, const std::string& metadata = "") {
  std::string header = "{";
  std::string data;
  for (const Entry& entry : entries) {
    if (header.size() > 1) header += ",";
    header += "\"" + entry.name + "\":{\"dtype\":\"" + entry.dtype + "\",\"shape\":" + entry.shape +
              ",\"data_offsets\":[" + std::to_string(data.size()) + "," +
              std::to_string(data.size() + entry.bytes.size()) + "]}";
    data += entry.bytes;
  }
  if (!metadata.empty()) header += (header.size() > 1 ? "," : "") + metadata;
  header += "}  ";  // trailing spaces are allowed padding
  std::string file(8, '\0');
  const uint64_t length = header.size();
  std::memcpy(file.data(), &length, sizeof(length));
  return file + header + data;
}

std::string Floats(const std::vector<float>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
}

std::span<const uint8_t> Bytes(const std::string& data) {
  return {reinterpret_cast<const uint8_t*>(data.data()), data.size()};
}

std::vector<Entry> SmallEntries() {
  return {{"a.weight", "F32", "[2, 3]", Floats({1, 2, 3, 4, 5, 6})},
          {"b.bias", "BF16", "[4]", std::string(8, '\x01')},
          {"ids", "I64", "[1, 2]", std::string(16, '\0')},
          {"empty", "F16", "[0, 5]", ""}};
}

TEST(SafetensorsFile, ReadsTensorsAndMetadata) {
  const std::string data = Build(SmallEntries(), R"("__metadata__":{"format":"pt"})");
  ASSERT_OK_AND_ASSIGN(const SafetensorsFile file, SafetensorsFile::Parse(Bytes(data), "m"));
  EXPECT_EQ(file.tensors().size(), 4u);
  EXPECT_EQ(file.metadata().at("format"), "pt");
  ASSERT_OK_AND_ASSIGN(const SafetensorsTensor* a, file.FindTensor("a.weight"));
  EXPECT_EQ(a->dtype, SafetensorsDType::kF32);
  EXPECT_THAT(a->shape, ElementsAre(2, 3));
  EXPECT_EQ(a->n_elements, 6);
  float values[6];
  std::memcpy(values, a->data.data(), sizeof(values));
  EXPECT_THAT(values, ElementsAre(1, 2, 3, 4, 5, 6));
  ASSERT_OK_AND_ASSIGN(const SafetensorsTensor* empty, file.FindTensor("empty"));
  EXPECT_EQ(empty->n_elements, 0);
  EXPECT_THAT(file.FindTensor("missing"), StatusIs(absl::StatusCode::kNotFound));
}

TEST(SafetensorsFile, EveryTruncationIsAnError) {
  const std::string data = Build(SmallEntries());
  for (size_t size = 0; size < data.size(); ++size) {
    const std::string prefix = data.substr(0, size);
    const auto file = SafetensorsFile::Parse(Bytes(prefix), "cut");
    ASSERT_FALSE(file.ok()) << size;
    EXPECT_THAT(file.status().code(),
                AnyOf(absl::StatusCode::kDataLoss, absl::StatusCode::kInvalidArgument));
  }
}

TEST(SafetensorsFile, RejectsHostileHeaders) {
  auto parse = [](const std::string& data) { return SafetensorsFile::Parse(Bytes(data), "h"); };
  std::string huge(8, '\xff');
  EXPECT_THAT(parse(huge + "{}"), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("limit")));
  EXPECT_THAT(parse(Build({{"x", "F33", "[1]", "abcd"}})),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown dtype 'F33'")));
  EXPECT_THAT(parse(Build({{"x", "F32", "[2]", "abcd"}})),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("do not hold its shape")));
  EXPECT_THAT(parse(Build({{"x", "F32", "[-1]", ""}})),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("invalid dimension")));
  EXPECT_THAT(parse(Build({{"x", "F32", "[4294967296, 4294967296, 4]", ""}})),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("too many")));
  EXPECT_THAT(parse(Build({{"x", "F32", "\"1\"", "abcd"}})),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(parse(Build({{"x", "F32", "[1]", "abcd"}, {"x", "F32", "[1]", "abcd"}})),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("duplicate")));
  // Offsets past the end of the data.
  std::string past = Build({{"x", "F32", "[1]", "abcd"}});
  past.resize(past.size() - 1);
  EXPECT_THAT(parse(past), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("past the end")));
  std::string not_json = Build({});
  not_json[8] = '[';
  EXPECT_THAT(parse(not_json), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("header")));
}

TEST(SafetensorsModel, OpensShardsThroughTheIndex) {
  TempDir dir;
  dir.WriteFile("model-00001-of-00002.safetensors",
                Build({{"a", "F32", "[1]", Floats({1})}, {"b", "F32", "[1]", Floats({2})}}));
  dir.WriteFile("model-00002-of-00002.safetensors", Build({{"c", "F32", "[1]", Floats({3})}}));
  dir.WriteFile("model.safetensors.index.json", R"({"metadata": {"total_size": 12},
    "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors",
                   "c": "model-00002-of-00002.safetensors"}})");
  ASSERT_OK_AND_ASSIGN(const SafetensorsModel model, SafetensorsModel::Open(dir.path().string()));
  EXPECT_EQ(model.n_shards(), 2u);
  EXPECT_EQ(model.tensors().size(), 3u);
  ASSERT_OK_AND_ASSIGN(const SafetensorsTensor* c, model.FindTensor("c"));
  float value = 0;
  std::memcpy(&value, c->data.data(), sizeof(value));
  EXPECT_EQ(value, 3.0f);
}

TEST(SafetensorsModel, RejectsInconsistentShards) {
  {
    TempDir dir;
    dir.WriteFile("s1.safetensors", Build({{"a", "F32", "[1]", Floats({1})}}));
    dir.WriteFile("s2.safetensors", Build({{"a", "F32", "[1]", Floats({1})}}));
    dir.WriteFile("model.safetensors.index.json",
                  R"({"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}})");
    EXPECT_THAT(SafetensorsModel::Open(dir.path().string()),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("in two shards")));
  }
  {
    TempDir dir;
    dir.WriteFile("s1.safetensors", Build({{"a", "F32", "[1]", Floats({1})}}));
    dir.WriteFile("model.safetensors.index.json",
                  R"({"weight_map": {"a": "s1.safetensors", "z": "s1.safetensors"}})");
    EXPECT_THAT(SafetensorsModel::Open(dir.path().string()),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'z' is not in its shard")));
  }
  {
    TempDir dir;
    dir.WriteFile("model.safetensors.index.json", R"({"weight_map": {"a": "../secret"}})");
    EXPECT_THAT(SafetensorsModel::Open(dir.path().string()),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a file name")));
  }
  TempDir empty;
  EXPECT_THAT(SafetensorsModel::Open(empty.path().string()), StatusIs(absl::StatusCode::kNotFound));
}

}  // namespace
}  // namespace silo::engine

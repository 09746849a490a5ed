// ModelHook, SequentialHook, add_hook_to_module and removal (accelerate-semantics.md §1.15.1-4,
// §3.9): replace unless appended, sequential order, pre/post transformations, removal restoring
// the plain forward.

#include "nn/nn_testing.h"

namespace strata::testing {
namespace {

Tensor plus_one(const Tensor& t) {
  return ops::add(t, Tensor::full({}, 1.0, t.dtype()).to(t.device()));
}

// The reference's PreForwardHook: (args[0] + 1,) + args[1:].
class PreForwardHook : public ModelHook {
 public:
  void pre_forward(Module&, Args& args) override {
    args.positional[0] = plus_one(args.positional[0].tensor());
  }
};

// The reference's PostForwardHook: output + 1.
class PostForwardHook : public ModelHook {
 public:
  void post_forward(Module&, Value& output) override { output = plus_one(output.tensor()); }
};

// Records every event with its name.
class RecordingHook : public ModelHook {
 public:
  RecordingHook(std::string name, std::vector<std::string>* log)
      : name_(std::move(name)), log_(log) {}
  void init_hook(Module& m) override { log_->push_back("init " + name_ + " " + m.class_name()); }
  void pre_forward(Module&, Args&) override { log_->push_back("pre " + name_); }
  void post_forward(Module&, Value&) override { log_->push_back("post " + name_); }
  void detach_hook(Module&) override { log_->push_back("detach " + name_); }

 private:
  std::string name_;
  std::vector<std::string>* log_;
};

class HooksTest : public ExecutionDeviceTest {
 protected:
  void SetUp() override {
    ExecutionDeviceTest::SetUp();
    if (IsSkipped()) return;
    randomize(model_);
    model_.to(device());
    x_ = random_tensor({2, 3}, DType::Float32, 42).to(device());
    expected_ = model_(x_).tensor();
    expected_plus_input_ = model_(plus_one(x_)).tensor();
    expected_plus_two_inputs_ = model_(plus_one(plus_one(x_))).tensor();
  }
  ModelForTest model_;
  Tensor x_, expected_, expected_plus_input_, expected_plus_two_inputs_;
};

TEST_P(HooksTest, AddAndRemove) {
  auto hook = std::make_shared<ModelHook>();
  add_hook_to_module(model_, hook);
  EXPECT_EQ(model_.hook_ptr(), hook);
  remove_hook_from_module(model_);
  EXPECT_EQ(model_.hook(), nullptr);
  EXPECT_TRUE(same_values(model_(x_).tensor(), expected_, {0, 0}));
}

TEST_P(HooksTest, AppendMakesOneSequentialHook) {
  auto first = std::make_shared<ModelHook>();
  auto second = std::make_shared<ModelHook>();
  add_hook_to_module(model_, first);
  add_hook_to_module(model_, second, /*append=*/true);
  auto* sequence = dynamic_cast<SequentialHook*>(model_.hook());
  ASSERT_NE(sequence, nullptr);
  EXPECT_EQ(sequence->hooks(), (std::vector<std::shared_ptr<ModelHook>>{first, second}));
  // A third append extends the same chain instead of nesting sequences.
  auto third = std::make_shared<ModelHook>();
  add_hook_to_module(model_, third, true);
  sequence = dynamic_cast<SequentialHook*>(model_.hook());
  ASSERT_NE(sequence, nullptr);
  EXPECT_EQ(sequence->hooks().size(), 3u);
  remove_hook_from_module(model_);
  EXPECT_EQ(model_.hook(), nullptr);
  // Appending to a module without a hook just attaches it.
  add_hook_to_module(model_, first, true);
  EXPECT_EQ(model_.hook_ptr(), first);
}

TEST_P(HooksTest, PreForwardReplacesUnlessAppended) {
  add_hook_to_module(model_, std::make_shared<PreForwardHook>());
  EXPECT_TRUE(same_values(model_(x_).tensor(), expected_plus_input_));
  add_hook_to_module(model_, std::make_shared<PreForwardHook>());  // replaces: still x + 1
  EXPECT_TRUE(same_values(model_(x_).tensor(), expected_plus_input_));
  add_hook_to_module(model_,
                     std::make_shared<SequentialHook>(std::vector<std::shared_ptr<ModelHook>>{
                         std::make_shared<PreForwardHook>(), std::make_shared<PreForwardHook>()}));
  EXPECT_TRUE(same_values(model_(x_).tensor(), expected_plus_two_inputs_));
  remove_hook_from_module(model_);
  add_hook_to_module(model_, std::make_shared<PreForwardHook>());
  add_hook_to_module(model_, std::make_shared<PreForwardHook>(), /*append=*/true);
  EXPECT_TRUE(same_values(model_(x_).tensor(), expected_plus_two_inputs_));
}

TEST_P(HooksTest, PostForwardReplacesUnlessAppended) {
  const Tensor plus1 = plus_one(expected_), plus2 = plus_one(plus1);
  add_hook_to_module(model_, std::make_shared<PostForwardHook>());
  EXPECT_TRUE(same_values(model_(x_).tensor(), plus1));
  add_hook_to_module(model_, std::make_shared<PostForwardHook>());
  EXPECT_TRUE(same_values(model_(x_).tensor(), plus1));
  add_hook_to_module(
      model_, std::make_shared<SequentialHook>(std::vector<std::shared_ptr<ModelHook>>{
                  std::make_shared<PostForwardHook>(), std::make_shared<PostForwardHook>()}));
  EXPECT_TRUE(same_values(model_(x_).tensor(), plus2));
  add_hook_to_module(model_, std::make_shared<PostForwardHook>());
  add_hook_to_module(model_, std::make_shared<PostForwardHook>(), true);
  EXPECT_TRUE(same_values(model_(x_).tensor(), plus2));
}

TEST_P(HooksTest, RemovalRestoresThePlainForwardEverywhere) {
  for (auto& [name, module] : model_.named_modules()) {
    add_hook_to_module(*module, std::make_shared<PostForwardHook>());
  }
  EXPECT_FALSE(same_values(model_(x_).tensor(), expected_));
  remove_hook_from_submodules(model_);
  for (auto& [name, module] : model_.named_modules()) EXPECT_EQ(module->hook(), nullptr) << name;
  EXPECT_TRUE(same_values(model_(x_).tensor(), expected_, {0, 0}));
}

STRATA_INSTANTIATE_DEVICE_TESTS(HooksTest);

TEST(HookEventsTest, SequentialRunsInListOrderForEveryEvent) {
  std::vector<std::string> log;
  ReLU relu;
  add_hook_to_module(relu, std::make_shared<SequentialHook>(std::vector<std::shared_ptr<ModelHook>>{
                               std::make_shared<RecordingHook>("a", &log),
                               std::make_shared<RecordingHook>("b", &log)}));
  (void)relu(Tensor::zeros({1}));
  remove_hook_from_module(relu);
  EXPECT_EQ(log, (std::vector<std::string>{"init a ReLU", "init b ReLU", "pre a", "pre b", "post a",
                                           "post b", "detach a", "detach b"}));
}

TEST(HookEventsTest, ReplaceDoesNotDetachAndAppendDoesNotReinitialise) {
  std::vector<std::string> log;
  ReLU relu;
  add_hook_to_module(relu, std::make_shared<RecordingHook>("a", &log));
  add_hook_to_module(relu, std::make_shared<RecordingHook>("b", &log));  // a is dropped silently
  add_hook_to_module(relu, std::make_shared<RecordingHook>("c", &log), true);
  remove_hook_from_module(relu);
  EXPECT_EQ(log, (std::vector<std::string>{"init a ReLU", "init b ReLU", "init c ReLU", "detach b",
                                           "detach c"}));
}

TEST(HookEventsTest, FailedInitKeepsTheCurrentHookAndNullHooksAreRejected) {
  class Failing : public ModelHook {
    void init_hook(Module&) override { STRATA_THROW(InvalidArgument, "init refused"); }
  };
  ReLU relu;
  auto kept = std::make_shared<ModelHook>();
  add_hook_to_module(relu, kept);
  EXPECT_THROW(add_hook_to_module(relu, std::make_shared<Failing>(), true), InvalidArgument);
  EXPECT_EQ(relu.hook_ptr(), kept);
  EXPECT_TRUE(
      throws_naming<InvalidArgument>([&] { add_hook_to_module(relu, nullptr); }, {"ReLU", "null"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [] { SequentialHook(std::vector<std::shared_ptr<ModelHook>>{nullptr}); }, {"null"}));
}

TEST(HookEventsTest, FindHookLooksInsideSequences) {
  ReLU relu;
  EXPECT_EQ(find_hook<RecordingHook>(relu), nullptr);
  add_hook_to_module(relu, std::make_shared<ModelHook>());
  std::vector<std::string> log;
  add_hook_to_module(relu, std::make_shared<RecordingHook>("r", &log), true);
  EXPECT_NE(find_hook<RecordingHook>(relu), nullptr);
  EXPECT_EQ(relu.hook()->describe(), "SequentialHook(ModelHook, ModelHook)");
}

// Records check_move (module class, name under the moved model, model class, device); refuses
// the move when `refuse`.
class MoveCheckingHook : public ModelHook {
 public:
  MoveCheckingHook(std::vector<std::string>* log, bool refuse) : log_(log), refuse_(refuse) {}
  void check_move(Module& module, Device device, const MoveContext& context) override {
    log_->push_back(module.class_name() + " '" + std::string(context.name) + "' of " +
                    context.model.class_name() + " to " + device.str());
    if (refuse_) STRATA_THROW(InvalidArgument, "move refused");
  }

 private:
  std::vector<std::string>* log_;
  bool refuse_;
};

TEST(HookEventsTest, CheckMoveSeesEveryHookBeforeAnythingMoves) {
  ModelForTest model;
  randomize(model);
  const auto before = snapshot(model);
  const void* first_weight = model.linear1->weight().data_ptr();
  std::vector<std::string> log;
  add_hook_to_module(*model.linear1, std::make_shared<MoveCheckingHook>(&log, false));
  // The refusing hook sits inside a SequentialHook on the last module: nothing may move before.
  add_hook_to_module(*model.linear2, std::make_shared<MoveCheckingHook>(&log, false));
  add_hook_to_module(*model.linear2, std::make_shared<MoveCheckingHook>(&log, true), true);
  EXPECT_TRUE(throws_naming<InvalidArgument>([&] { model.to(Device::meta()); }, {"refused"}));
  EXPECT_EQ(log, (std::vector<std::string>{"Linear 'linear1' of ModelForTest to meta",
                                           "Linear 'linear2' of ModelForTest to meta",
                                           "Linear 'linear2' of ModelForTest to meta"}));
  EXPECT_EQ(model.linear1->weight().data_ptr(), first_weight);
  EXPECT_EQ(snapshot(model), before);
  // The dtype form is checked too; a move of the submodule names it as the root.
  log.clear();
  EXPECT_THROW(model.to(Device::cpu(), DType::Float16), InvalidArgument);
  EXPECT_THROW(model.linear2->to(Device::cpu()), InvalidArgument);
  EXPECT_EQ(log.back(), "Linear '' of Linear to cpu");
  EXPECT_EQ(model.linear1->weight().dtype(), DType::Float32);
  // Only a device move is checked: to(dtype) keeps every tensor where it is.
  log.clear();
  model.to(DType::Float64);
  EXPECT_TRUE(log.empty());
  remove_hook_from_module(model, /*recurse=*/true);
  model.to(Device::meta());
  EXPECT_TRUE(model.linear2->weight().is_meta());
}

}  // namespace
}  // namespace strata::testing

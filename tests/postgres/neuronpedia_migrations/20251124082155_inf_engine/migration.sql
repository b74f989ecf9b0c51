-- CreateIndex
CREATE INDEX "InferenceHostSource_engine_idx" ON "InferenceHostSource"("engine");

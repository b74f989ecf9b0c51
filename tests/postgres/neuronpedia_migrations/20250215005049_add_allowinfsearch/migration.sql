-- AlterTable
ALTER TABLE "SourceSet" ADD COLUMN     "allowInferenceSearch" BOOLEAN NOT NULL DEFAULT true;

-- AlterTable
ALTER TABLE "InferenceHostSource" ADD COLUMN     "runpodServerlessUrl" TEXT;
